"""The seeded mixed workload: what other systems and the staff send, planned from the seed alone, then driven.

`plan_inputs(seed, ...)` is pure: the same seed gives the same inputs at the same offsets, whatever the machine's
speed. `Driver` sends them: counter payments over HTTP (retried on the same Idempotency-Key until a definite
answer, alternating between the payments instances as a load balancer would), `payment.record_requested`
commands on Kafka in lockbox-like bursts (some sent twice), signed Stripe webhooks (the succeeded event sometimes
duplicated, sometimes before the processing one), manual credit notes applied back to the bill, cancellations.
Every record the broker acknowledges is journalled at once with the broker generation that took it, so after a
wiped broker the "other systems" send again what it had acknowledged and lost (the inboxes make that harmless).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from functools import partial
from typing import Any, Literal

import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from paydesk.sample_data import generate_accounts
from shared.auth import Role, mint_token
from shared.contracts import CONTENT_TYPE, Topic, new_envelope
from shared.contracts.events import PaymentRecordRequested
from tests.chaos.journal import Journal
from tests.chaos.system import ChaosSystem
from tests.support import stripe_fake

Kind = Literal["counter", "command", "webhook", "credit_note", "cancel"]
PAYMENT_KINDS: tuple[Kind, ...] = ("counter", "command", "webhook")
OVERPAY_EVERY = 10
# A client gives up on a request after this many tries (with backoff up to 5 s: minutes, not seconds).
MAX_ATTEMPTS = 60
RETRY_STATUSES = {409, 429, 500, 502, 503, 504}


@dataclass(frozen=True, slots=True)
class Bill:
    account: str
    invoice: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Input:
    at: float  # seconds after the workload starts
    kind: Kind
    key: str  # unique: the payment's notes (counter, command) or payment intent id (webhook)
    account: int  # index into the bills
    overpay: bool = False
    twice: bool = False  # command: published twice; webhook: the succeeded event delivered twice
    reversed: bool = False  # webhook: succeeded delivered before processing
    target: str = ""  # credit_note / cancel: the key of the counter payment it acts on
    burst: int = -1  # command: which lockbox burst carries it


@dataclass
class Outcome:
    status: str = "pending"  # accepted | rejected | unconfirmed | skipped
    detail: str = ""
    payment_id: str | None = None
    receipt_number: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def finish(self, status: str, detail: str = "", **ids: str | None) -> None:
        self.status, self.detail = status, detail
        self.payment_id = ids.get("payment_id", self.payment_id)
        self.receipt_number = ids.get("receipt_number", self.receipt_number)
        self.done.set()


def bills_of(accounts: int, seed: int) -> list[Bill]:
    return [
        Bill(e.subject, e.data["invoice_number"], Decimal(e.data["amount"]["amount"]))
        for e in generate_accounts(accounts, seed=seed)
        if e.type == "bill.issued"
    ]


def plan_inputs(seed: int, *, seconds: float, payments: int, accounts: int) -> list[Input]:
    """Most of the volume as lockbox bursts of commands; a few percent over HTTP and Stripe; staff actions on
    some counter payments. Ordered by time."""
    rng = random.Random(f"workload-{seed}")
    counter = max(8, payments * 5 // 100)
    webhooks = max(6, payments * 3 // 100)
    commands = max(0, payments - counter - webhooks)
    bursts = max(1, int(seconds // 8))
    inputs: list[Input] = []
    for n in range(counter):
        inputs.append(
            Input(
                rng.uniform(0, seconds),
                "counter",
                f"chaos-{seed}-counter-{n}",
                rng.randrange(accounts),
                overpay=n % OVERPAY_EVERY == 0,
            )
        )
    for n in range(webhooks):
        inputs.append(
            Input(
                rng.uniform(0, seconds),
                "webhook",
                f"pi_chaos{seed}x{n}",
                rng.randrange(accounts),
                overpay=n % OVERPAY_EVERY == 0,
                twice=rng.random() < 0.5,
                reversed=rng.random() < 0.5,
            )
        )
    for n in range(commands):
        burst = n % bursts
        inputs.append(
            Input(
                seconds * burst / bursts,
                "command",
                f"chaos-{seed}-command-{n}",
                rng.randrange(accounts),
                overpay=n % OVERPAY_EVERY == 0,
                twice=rng.random() < 0.05,
                burst=burst,
            )
        )
    targets = [i for i in inputs if i.kind == "counter" and not i.overpay]
    rng.shuffle(targets)
    actions = max(1, counter // 15)
    for n, target in enumerate(targets[: 2 * actions]):
        kind: Kind = "credit_note" if n % 2 == 0 else "cancel"
        at = min(seconds, target.at + rng.uniform(2, 10))
        inputs.append(Input(at, kind, f"chaos-{seed}-{kind}-{n}", target.account, target=target.key))
    return sorted(inputs, key=lambda i: (i.at, i.key))


@dataclass(frozen=True, slots=True)
class Published:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass(eq=False)
class Driver:
    system: ChaosSystem
    bills: list[Bill]
    today: date
    say: Callable[[str], None] = print
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)  # HTTP answers seen, per kind
    journal: Journal[Published] = field(default_factory=Journal)
    _producer: AIOKafkaProducer | None = None
    _client: httpx.AsyncClient | None = None
    _turn: int = 0
    _unfinished: set[int] = field(default_factory=set)  # sends whose `publish` call has not returned yet

    def __post_init__(self) -> None:
        secret = self.system.jwt_secret
        self.clerk = {
            "Authorization": f"Bearer {mint_token(secret, user='Chaos Clerk', roles=[Role.CUSTOMER_EXECUTIVE])}"
        }
        self.admin = {"Authorization": f"Bearer {mint_token(secret, user='Chaos Admin', roles=[Role.ADMIN])}"}

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=32))
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.system.bootstrap, acks="all", linger_ms=5, request_timeout_ms=30000
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
        if self._client is not None:
            await self._client.aclose()

    async def run(self, inputs: list[Input], started: float) -> None:
        """Send every input at its planned offset from `started` (monotonic); returns when all are answered."""
        for item in inputs:
            self.outcomes[item.key] = Outcome()
        gate = asyncio.Semaphore(24)  # concurrent HTTP clients
        tasks = []
        bursts: dict[int, list[Input]] = {}
        for item in inputs:
            if item.kind == "command":
                bursts.setdefault(item.burst, []).append(item)
        for items in bursts.values():
            tasks.append(asyncio.create_task(self._at(started, items[0].at, self._lockbox(items))))
        for item in inputs:
            if item.kind != "command":
                tasks.append(asyncio.create_task(self._at(started, item.at, self._one(item, gate))))
        await asyncio.gather(*tasks)

    async def _at(self, started: float, offset: float, job: Any) -> None:
        await asyncio.sleep(max(0.0, started + offset - time.monotonic()))
        await job

    async def _one(self, item: Input, gate: asyncio.Semaphore) -> None:
        if item.kind in ("credit_note", "cancel"):
            target = self.outcomes[item.target]
            await target.done.wait()
            if target.status != "accepted":
                self.outcomes[item.key].finish("skipped", f"its payment was {target.status}")
                return
        async with gate:
            if item.kind == "counter":
                await self._counter(item)
            elif item.kind == "webhook":
                await self._webhook(item)
            elif item.kind == "credit_note":
                await self._credit_note(item)
            else:
                await self._cancel(item)

    # --- HTTP, retried like a careful client ---

    def _next(self, service: str) -> str:
        instances = self.system.of(service)
        self._turn += 1
        return instances[self._turn % len(instances)].url

    async def _call(
        self,
        kind: str,
        service: str,
        path: str,
        body: dict[str, Any],
        headers: dict[str, str],
        ok: int,
        retry: set[int] = RETRY_STATUSES,
    ) -> httpx.Response | None:
        """POST until the answer is `ok` or a definite refusal; None if it never came (unconfirmed)."""
        seen = self.statuses.setdefault(kind, {})
        for attempt in range(MAX_ATTEMPTS):
            try:
                assert self._client is not None
                response = await self._client.post(f"{self._next(service)}{path}", json=body, headers=headers)
            except httpx.HTTPError:
                seen[0] = seen.get(0, 0) + 1
            else:
                seen[response.status_code] = seen.get(response.status_code, 0) + 1
                if response.status_code == ok or response.status_code not in retry:
                    return response
            await asyncio.sleep(min(5.0, 0.25 * 2 ** min(attempt, 5)))
        return None

    def _payment_body(self, item: Input) -> dict[str, Any]:
        bill = self.bills[item.account]
        body: dict[str, Any] = {
            "account_number": bill.account,
            "payment_type": "bill",
            "item_reference": bill.invoice,
            "payment_date": self.today.isoformat(),
            "notes": item.key,
        }
        if item.overpay:
            return {**body, "method": "Cheque", "amount": str(bill.amount + Decimal("5.00"))}
        return {**body, "method": "Cash", "amount": "1.00", "cash_received": "5.00"}

    async def _counter(self, item: Input) -> None:
        headers = {**self.clerk, "Idempotency-Key": item.key}
        response = await self._call("counter", "payments", "/payments", self._payment_body(item), headers, 201)
        self._settle(item, response, 201)

    def _settle(self, item: Input, response: httpx.Response | None, ok: int) -> None:
        outcome = self.outcomes[item.key]
        if response is None:
            outcome.finish("unconfirmed", "no definite answer")
        elif response.status_code == ok:
            data = response.json()
            outcome.finish("accepted", payment_id=data.get("payment_id"), receipt_number=data.get("receipt_number"))
        else:
            outcome.finish("rejected", f"{response.status_code} {response.text[:300]}")

    async def _credit_note(self, item: Input) -> None:
        target = self.outcomes[item.target]
        headers = {**self.clerk, "Idempotency-Key": f"{item.key}-issue"}
        body = {
            "receipt_number": target.receipt_number,
            "amount": "1.00",
            "reason": "Billing Error",
        }  # one of credit_notes' reasons
        # 404 until credit_notes has heard of the payment over Kafka: retried like a 503.
        issued = await self._call(
            "credit_note", "credit_notes", "/credit-notes", body, headers, 201, RETRY_STATUSES | {404}
        )
        if issued is None or issued.status_code != 201:
            self._settle(item, issued, 201)
            return
        number = issued.json()["credit_note_number"]
        bill = self.bills[item.account]
        apply = {"payment_type": "bill", "item_reference": bill.invoice, "amount": "1.00"}
        headers = {**self.clerk, "Idempotency-Key": f"{item.key}-apply"}
        applied = await self._call(
            "credit_note", "credit_notes", f"/credit-notes/{number}/apply", apply, headers, 200, RETRY_STATUSES | {404}
        )
        outcome = self.outcomes[item.key]
        if applied is not None and applied.status_code == 200:
            outcome.finish("accepted", f"{number} issued and applied")
        else:
            detail = "no answer" if applied is None else f"{applied.status_code} {applied.text[:200]}"
            outcome.finish("accepted", f"{number} issued; apply refused: {detail}")

    async def _cancel(self, item: Input) -> None:
        target = self.outcomes[item.target]
        body = {"reason": "Chaos: entered twice"}
        response = await self._call(
            "cancel", "payments", f"/payments/{target.payment_id}/cancel", body, dict(self.admin), 200
        )
        self._settle(item, response, 200)

    async def _webhook(self, item: Input) -> None:
        bill = self.bills[item.account]
        cents = int((bill.amount + Decimal("5.00")) * 100) if item.overpay else 100
        meta = stripe_fake.metadata(bill.account, bill.invoice)
        created = int(time.time())
        processing = stripe_fake.payment_intent_event(
            "payment_intent.processing", item.key, meta, amount=cents, created=created, event_id=f"evt_p_{item.key}"
        )
        succeeded = stripe_fake.payment_intent_event(
            "payment_intent.succeeded", item.key, meta, amount=cents, created=created + 1, event_id=f"evt_s_{item.key}"
        )
        order = [succeeded, processing] if item.reversed else [processing, succeeded]
        if item.twice:
            order.append(succeeded)
        answers: dict[str, int] = {}
        for event in order:
            body = stripe_fake.body_of(event)
            status = await self._deliver_webhook(body)
            answers[event["id"]] = status
        ok = answers.get(succeeded["id"]) == 200
        self.outcomes[item.key].finish("accepted" if ok else "unconfirmed", json.dumps(answers))

    async def _deliver_webhook(self, body: bytes) -> int:
        """Stripe retries a delivery until it gets a 2xx: so do we (signing afresh, as Stripe does)."""
        seen = self.statuses.setdefault("webhook", {})
        assert self._client is not None
        for attempt in range(MAX_ATTEMPTS):
            headers = {"Stripe-Signature": stripe_fake.sign(body), "content-type": "application/json"}
            try:
                response = await self._client.post(
                    f"{self._next('gateway_bridge')}/webhooks/stripe", content=body, headers=headers
                )
            except httpx.HTTPError:
                seen[0] = seen.get(0, 0) + 1
            else:
                seen[response.status_code] = seen.get(response.status_code, 0) + 1
                if response.status_code < 300:
                    return response.status_code
            await asyncio.sleep(min(5.0, 0.25 * 2 ** min(attempt, 5)))
        return 0

    # --- Kafka: the enterprise system's lockbox ---

    def command(self, item: Input) -> Published:
        body = self._payment_body(item)
        data = PaymentRecordRequested.model_validate(body)
        bill = self.bills[item.account]
        envelope = new_envelope("payment.record_requested", source="chaos-lockbox", subject=bill.account, data=data)
        headers = [("content-type", CONTENT_TYPE.encode())]
        return Published(Topic.PAYMENTS_COMMANDS, bill.account.encode(), envelope.to_bytes(), headers)

    async def publish(self, records: list[Published]) -> int:
        """Publish until the broker acknowledged each record (acks=all). Returns how many never were."""
        sends = [(self.journal.new_send(), record) for record in records]
        serials = {serial for serial, _ in sends}
        self._unfinished |= serials
        try:
            return await self._publish(sends)
        finally:
            self._unfinished -= serials

    async def _publish(self, sends: list[tuple[int, Published]]) -> int:
        assert self._producer is not None
        pending = list(sends)
        for attempt in range(MAX_ATTEMPTS):
            futures: list[asyncio.Future[Any]] = []
            for serial, record in pending:
                try:
                    future = await self._producer.send(
                        record.topic, record.value, key=record.key, headers=record.headers
                    )
                except KafkaError as exc:
                    future = asyncio.get_running_loop().create_future()
                    future.set_exception(exc)
                # Journalled at the acknowledgement itself, not when the whole burst is done: a wipe may come
                # between the two, and its resend must include this record.
                future.add_done_callback(partial(self._acknowledged, serial, record))
                futures.append(future)
            results = await asyncio.gather(*futures, return_exceptions=True)
            pending = [send for send, result in zip(pending, results, strict=True) if isinstance(result, BaseException)]
            if not pending:
                return 0
            await asyncio.sleep(min(5.0, 0.25 * 2 ** min(attempt, 5)))
        return len(pending)

    def _acknowledged(self, serial: int, record: Published, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.journal.acknowledged(serial, record)

    async def _lockbox(self, items: list[Input]) -> None:
        records = {item.key: self.command(item) for item in items}
        again = [records[item.key] for item in items if item.twice]
        failed = await self.publish([*records.values(), *again])
        for item in items:
            if failed:
                self.outcomes[item.key].finish("unconfirmed", f"{failed} records of the burst never acknowledged")
            else:
                self.outcomes[item.key].finish("accepted")

    async def resend_journal(self) -> str:
        """Once a wiped broker is up again: send again everything an earlier broker generation acknowledged (same
        records, same event ids); see tests/chaos/journal.py."""
        again = self.journal.broker_wiped()
        # What a journal written only when a whole burst was acknowledged would have missed.
        early = sum(1 for serial, _ in again if serial in self._unfinished)
        failed = await self._publish(again)
        note = f"{len(again)} records sent again (generation {self.journal.generation}), {early} of them "
        note += "acknowledged while their burst still retried"
        return note + (f", {failed} never acknowledged" if failed else "")
