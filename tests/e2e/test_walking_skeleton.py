"""The running system: five services as real processes on the real broker and database.

A counter payment goes in over HTTP; receipts and kpi learn of it through Kafka, in one trace.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import text

from paydesk.embedded import free_port
from paydesk.launcher import publish_reference_data
from paydesk.oncall import SpanRecord, load_trace
from paydesk.registry import SERVICES
from shared.auth import Role, mint_token
from shared.db import create_engine
from tests.conftest import Infra
from tests.support import stripe_fake
from tests.support.helpers import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]
T = TypeVar("T")

SECRET = "e2e-secret-that-is-long-enough-for-hs256"
PREFIXES = {
    "gateway_bridge": "GATEWAY_BRIDGE_",
    "payments": "PAYMENTS_",
    "credit_notes": "CREDIT_NOTES_",
    "receipts": "RECEIPTS_",
    "kpi": "KPI_",
    "reconciliation": "RECONCILIATION_",
    "console": "CONSOLE_",
    "collections": "COLLECTIONS_",
    "payouts": "PAYOUTS_",
}


class System:
    def __init__(self, ports: dict[str, int], logs: Path, processes: dict[str, subprocess.Popen[bytes]]) -> None:
        self.ports, self.logs, self.processes = ports, logs, processes

    def url(self, service: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    def log_lines(self, service: str) -> list[dict[str, Any]]:
        lines = (self.logs / f"{service}.log").read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.fixture(scope="module")
def system(infra: Infra) -> Iterator[System]:
    ports = {name: free_port() for name in SERVICES}
    logs = infra.workdir / "e2e-logs"
    logs.mkdir(exist_ok=True)
    env = {
        **os.environ,
        **infra.env(),
        "PAYDESK_JWT_SECRET": SECRET,
        "PAYDESK_OTEL_EXPORTER": "postgres",  # the trace is followed where `paydesk trace` reads it
        "STRIPE_WEBHOOK_SECRET": stripe_fake.SECRET,
    }
    env.update({f"{PREFIXES[name]}HTTP_PORT": str(port) for name, port in ports.items()})
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "paydesk.cli", "service", name],
            env=env,
            stdout=open(logs / f"{name}.log", "wb"),  # noqa: SIM115 - held open for the process lifetime
            stderr=subprocess.STDOUT,
        )
        for name in SERVICES
    }
    running = System(ports, logs, processes)
    try:
        deadline = time.monotonic() + 300  # a bound for a busy machine, not a budget
        for name in SERVICES:
            while True:
                try:
                    if httpx.get(running.url(name, "/health/ready"), timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert processes[name].poll() is None, (logs / f"{name}.log").read_text()[-3000:]
                assert time.monotonic() < deadline, f"{name} not ready"
                time.sleep(0.2)
        yield running
    finally:
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def applied_in_trace(infra: Infra, trace_id: str, service: str, event_type: str) -> list[SpanRecord]:
    """The spans of `service`'s consumers applying `event_type` in the trace, as `paydesk trace` finds them."""
    return [
        span
        for span in load_trace(infra.database_url, trace_id)
        if span.service == service
        and span.kind == "CONSUMER"
        and span.attributes.get("paydesk.event_type") == event_type
        and span.status != "ERROR"
    ]


def wait_for(check: Callable[[], T], timeout: float = 30) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


async def test_a_counter_payment_reaches_receipts_and_kpi_in_one_trace(system: System, infra: Infra) -> None:
    await publish_reference_data(infra.bootstrap_servers)
    clerk = mint_token(SECRET, user="Jane Smith", roles=[Role.CUSTOMER_EXECUTIVE])
    manager = mint_token(SECRET, user="Bill Manager", roles=[Role.BILLING_MANAGER])
    body = {
        "account_number": "WU-10001",
        "payment_type": "bill",
        "item_reference": "INV-2025-001234",
        "channel": "Walk-in",
        "method": "Cash",
        "amount": "145.50",
        "payment_date": "2025-04-20",
        "cash_received": "150.00",
        "notes": "Customer paid in full",
    }

    def post() -> httpx.Response:
        return httpx.post(
            system.url("payments", "/payments"),
            json=body,
            timeout=10,
            headers={"Authorization": f"Bearer {clerk}", "Idempotency-Key": "e2e-counter-0001"},
        )

    response = wait_for(lambda: (r := post()).status_code == 201 and r)  # billing events may still be in flight
    assert isinstance(response, httpx.Response), "payment was not accepted"
    payment = response.json()
    assert re.fullmatch(r"PAY-2025-\d{6}", payment["payment_id"])
    assert re.fullmatch(r"TXN-2025-\d{6}", payment["transaction_id"])
    assert re.fullmatch(r"R-\d{4,}", payment["receipt_number"])
    assert (payment["status"], payment["verification"], payment["processing_time"]) == (
        "Posted",
        "Verified",
        "Immediate",
    )
    assert payment["received_by"] == "Jane Smith"
    assert payment["change_given"] == "4.50"
    assert payment["analysis"] == {"due": "145.50", "paid": "145.50", "difference": "0.00", "outcome": "exact"}
    trace_id = response.headers["X-Trace-Id"]

    retry = post()
    assert retry.status_code == 201 and retry.json()["payment_id"] == payment["payment_id"], "same key posts once"

    def kpi_total() -> bool:
        summary = httpx.get(
            system.url("kpi", "/kpi/summary?period=2025-04"), headers={"Authorization": f"Bearer {manager}"}
        ).json()
        return bool(summary["total_collected"] == [{"currency": "USD", "amount": "145.50", "payments": 1}])

    assert wait_for(kpi_total), "kpi did not count the payment exactly once"

    engine = create_engine(infra.database_url)

    async def receipt_row() -> tuple[object, ...] | None:
        async with engine.connect() as conn:
            found = (
                await conn.execute(
                    text("SELECT payment_id, amount_text FROM receipts.receipts WHERE receipt_number = :r"),
                    {"r": payment["receipt_number"]},
                )
            ).first()
        return tuple(found) if found is not None else None

    row = await eventually(receipt_row)  # receipts consumes independently of kpi
    await engine.dispose()
    assert row == (payment["payment_id"], "$145.50")

    for consumer in ("receipts", "kpi"):
        applied = wait_for(lambda c=consumer: applied_in_trace(infra, trace_id, c, "payment.posted"))  # type: ignore[misc]
        assert applied, f"{consumer} applied no payment.posted in the request's trace"
        assert applied[0].attributes["paydesk.account"] == "WU-10001"


def test_an_online_payment_from_a_stripe_webhook_is_posted_receipted_and_traced(system: System, infra: Infra) -> None:
    """A signed webhook for the seed's April bill: gateway_bridge -> payments -> receipts, in one trace."""
    intent = stripe_fake.new_id("pi")
    meta = stripe_fake.metadata("WU-10001", "INV-2025-001567")
    body = stripe_fake.body_of(stripe_fake.payment_intent_event("payment_intent.succeeded", intent, meta, amount=15225))
    response = httpx.post(
        system.url("gateway_bridge", "/webhooks/stripe"),
        content=body,
        headers={"Stripe-Signature": stripe_fake.sign(body), "content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    trace_id = response.headers["X-Trace-Id"]
    manager = {"Authorization": f"Bearer {mint_token(SECRET, user='Bill Manager', roles=[Role.BILLING_MANAGER])}"}

    def online_payment() -> dict[str, Any] | None:
        rows = httpx.get(system.url("payments", "/payments"), params={"q": "WU-10001"}, headers=manager).json()
        for row in rows["payments"]:
            detail = httpx.get(system.url("payments", row["links"]["details"]), headers=manager).json()
            if detail["payment_information"]["channel"] == "Online":
                return dict(detail)
        return None

    payment = wait_for(online_payment)
    assert payment is not None, "payments never posted the online payment"
    assert (payment["status"], payment["verification"], payment["received_by"]) == ("Posted", "Pending", "System")
    assert payment["amount"] == "152.25" and payment["analysis"]["outcome"] == "exact"
    assert payment["payment_information"]["webhook_status"] == "In Settlement"
    assert payment["payment_information"]["settlement_status"] == "In Progress"

    def traced(service: str, event_type: str) -> list[SpanRecord]:
        return applied_in_trace(infra, trace_id, service, event_type)

    assert wait_for(lambda: traced("payments", "gateway.payment_status_changed")), "payments lost the webhook's trace"
    assert wait_for(lambda: traced("receipts", "payment.posted")), "receipts lost the webhook's trace"
    assert wait_for(lambda: traced("kpi", "payment.posted")), "kpi lost the webhook's trace"


def test_staff_endpoints_refuse_requests_without_a_valid_token(system: System) -> None:
    assert httpx.get(system.url("payments", "/payments/R-5001")).status_code == 401
    forged = mint_token("another-secret-of-sufficient-length-xx", user="Mallory", roles=[Role.ADMIN])
    assert (
        httpx.get(
            system.url("kpi", "/kpi/summary?period=2025-04"), headers={"Authorization": f"Bearer {forged}"}
        ).status_code
        == 401
    )
    clerk = mint_token(SECRET, user="Jane Smith", roles=[Role.CUSTOMER_EXECUTIVE])
    assert (
        httpx.get(
            system.url("kpi", "/kpi/summary?period=2025-04"), headers={"Authorization": f"Bearer {clerk}"}
        ).status_code
        == 403
    )


def test_every_service_reports_health_and_metrics(system: System) -> None:
    for name in SERVICES:
        assert httpx.get(system.url(name, "/health/live")).json() == {"status": "ok"}
        ready = httpx.get(system.url(name, "/health/ready")).json()
        checks = ready["checks"]
        assert checks.pop("consumers", "ok") == "ok", checks  # a service with consumers: none stalled
        assert checks == {"database": "ok", "broker": "ok"}
        assert "paydesk_outbox_pending" in httpx.get(system.url(name, "/metrics")).text
