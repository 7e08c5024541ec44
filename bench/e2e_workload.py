"""What `bench/e2e.py` sends and what it tracks: the bills, the payments made on them, and when each payment reached
each stage (posted, receipt, credit note, KPI), as read from the output topics and the KPI API."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import aiohttp

from paydesk.sample_data import generate_accounts
from shared.contracts import new_envelope
from shared.contracts.events import PaymentRecordRequested

OVERPAY_EVERY = 10


@dataclass
class Bill:
    account: str
    invoice: str
    amount: Decimal


@dataclass
class Payment:
    key: str
    path: str  # "http" or "lockbox"
    requested: float
    amount: Decimal
    accepted: float | None = None
    posted: float | None = None
    payment_id: str | None = None
    receipt_number: str | None = None
    outcome: str | None = None
    available: float | None = None  # receipt.available, or receipt.rendered if that came first: a GET returns the PDF
    receipt: float | None = None  # receipt.rendered: the PDF file is stored
    credit_note: float | None = None
    kpi: float | None = None

    def done(self) -> float | None:
        """When the payment was fully processed: posted, receipt available, credit note if overpaid, counted by KPI."""
        stages = [self.posted, self.available, self.kpi]
        if self.outcome == "over":
            stages.append(self.credit_note)
        return None if any(s is None for s in stages) else max(s for s in stages if s is not None)


@dataclass
class Tracker:
    payments: dict[str, Payment] = field(default_factory=dict)
    by_payment_id: dict[str, Payment] = field(default_factory=dict)
    by_receipt: dict[str, Payment] = field(default_factory=dict)
    early_receipts: dict[str, float] = field(default_factory=dict)
    early_available: dict[str, float] = field(default_factory=dict)
    early_credit_notes: dict[str, float] = field(default_factory=dict)
    posted_order: list[Payment] = field(default_factory=list)
    posted_total: Decimal = Decimal(0)
    kpi_samples: list[tuple[float, int, Decimal]] = field(default_factory=list)
    stage_times: dict[str, list[float]] = field(
        default_factory=lambda: {"posted": [], "available": [], "receipt": [], "credit": []}
    )

    def on_event(self, kind: str, data: dict[str, Any], stamp: float) -> None:
        if kind == "payment.posted":
            payment = self.payments.get(str(data.get("notes") or ""))
            if payment is None or payment.posted is not None:
                return
            payment.posted, payment.payment_id = stamp, data["payment_id"]
            payment.receipt_number, payment.outcome = data["receipt_number"], data["outcome"]
            self.by_payment_id[data["payment_id"]] = payment
            self.by_receipt[data["receipt_number"]] = payment
            payment.receipt = self.early_receipts.pop(data["receipt_number"], None)
            payment.available = self.early_available.pop(data["receipt_number"], None)
            payment.credit_note = self.early_credit_notes.pop(data["payment_id"], None)
            self.posted_order.append(payment)
            self.posted_total += Decimal(data["amount"]["amount"])
            self.stage_times["posted"].append(stamp)
        elif kind in ("receipt.rendered", "receipt.available") and data.get("document") == "receipt":
            if kind == "receipt.rendered":
                self.stage_times["receipt"].append(stamp)
                target = self.by_receipt.get(data["number"])
                if target is None:
                    self.early_receipts.setdefault(data["number"], stamp)
                elif target.receipt is None:
                    target.receipt = stamp
            # A rendered receipt is available too (before receipts announced `receipt.available`, only that came).
            target = self.by_receipt.get(data["number"])
            if target is None:
                self.early_available.setdefault(data["number"], stamp)
            elif target.available is None:
                target.available = stamp
                self.stage_times["available"].append(stamp)
        elif kind == "credit_note.issued":
            self.stage_times["credit"].append(stamp)
            target = self.by_payment_id.get(data["payment_id"])
            if target is None:
                self.early_credit_notes.setdefault(data["payment_id"], stamp)
            elif target.credit_note is None:
                target.credit_note = stamp

    def on_kpi(self, stamp: float, count: int, amount: Decimal) -> None:
        """The KPI counts payments as they are posted: the first `count` posted are visible there at `stamp`."""
        self.kpi_samples.append((stamp, count, amount))
        ordered = sorted(self.posted_order, key=lambda p: p.posted or 0.0)
        for payment in ordered[:count]:
            if payment.kpi is None:
                payment.kpi = max(stamp, payment.posted or stamp)

    def of(self, path: str) -> list[Payment]:
        return [p for p in self.payments.values() if p.path == path]


def bills_of(accounts: int) -> list[Bill]:
    """The bills `publish_reference_data` publishes (same generator, same seed)."""
    return [
        Bill(e.subject, e.data["invoice_number"], Decimal(e.data["amount"]["amount"]))
        for e in generate_accounts(accounts)
        if e.type == "bill.issued"
    ]


def plan(bills: list[Bill]) -> Iterator[tuple[Bill, bool]]:
    """Payments to make: every bill once (every tenth overpaid), then 1.00 on the others over and over."""
    for index, bill in enumerate(bills):
        yield bill, index % OVERPAY_EVERY == 0
    rest = [bill for index, bill in enumerate(bills) if index % OVERPAY_EVERY]
    while True:
        for bill in rest:
            yield bill, False


def request_body(bill: Bill, overpay: bool, key: str, today: date) -> dict[str, Any]:
    if overpay:
        return {
            "account_number": bill.account,
            "payment_type": "bill",
            "item_reference": bill.invoice,
            "method": "Cheque",
            "amount": str(bill.amount + Decimal("5.00")),
            "payment_date": today.isoformat(),
            "notes": key,
        }
    return {
        "account_number": bill.account,
        "payment_type": "bill",
        "item_reference": bill.invoice,
        "method": "Cash",
        "amount": "1.00",
        "cash_received": "5.00",
        "payment_date": today.isoformat(),
        "notes": key,
    }


def lockbox_command(bill: Bill, overpay: bool, key: str, today: date) -> tuple[bytes, Decimal]:
    """A `payment.record_requested` envelope as a bank's lockbox would publish it, and its amount."""
    command = PaymentRecordRequested.model_validate(request_body(bill, overpay, key, today))
    envelope = new_envelope("payment.record_requested", source="bench-lockbox", subject=bill.account, data=command)
    return envelope.to_bytes(), command.amount


async def post_payment(
    client: aiohttp.ClientSession, tracker: Tracker, bill: Bill, overpay: bool, today: date
) -> tuple[int, float]:
    """One counter payment (`POST /payments` with its own Idempotency-Key), tracked if accepted: status and ms."""
    key = f"bench-http-{uuid.uuid4().hex}"
    payment = Payment(key, "http", time.time(), bill.amount + Decimal("5.00") if overpay else Decimal(1))
    tracker.payments[key] = payment
    started = time.perf_counter()
    try:
        async with client.post(
            "/payments", json=request_body(bill, overpay, key, today), headers={"Idempotency-Key": key}
        ) as response:
            await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError):
        status = 0
    elapsed_ms = (time.perf_counter() - started) * 1000
    if status == 201:
        payment.accepted = time.time()
    else:
        del tracker.payments[key]
    return status, elapsed_ms
