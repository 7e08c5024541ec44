"""KPI's consumers applied a delivery batch at a time leave exactly what one event at a time leaves: the same rows,
the same totals and the same alerts staged, in the same order, on the real database; the common case in a fixed
number of statements.

Each run has a currency of its own (aggregates are kept per currency) and a prefix of its own for payment ids and
item references, so two runs in one database compare after both are taken out.

The currencies are handed out in turn, never drawn: drawn from a hundred codes, two of the module's five runs met
on one about one time in ten, and the later run's per-currency rows then held the earlier one's too.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete, event, insert, select

from services.kpi.alerts import Alerts
from services.kpi.app import create_service
from services.kpi.projections import subscriptions
from services.kpi.settings import KpiSettings
from services.kpi.storage import (
    alert_rules,
    alert_states,
    daily_collections,
    daily_dues,
    daily_events,
    daily_receipts,
    payments,
    plumbing,
    receivables,
    verification_backlog,
)
from shared.contracts import CONTENT_TYPE, Envelope, Topic, new_envelope
from shared.contracts.events import (
    BillIssued,
    ConsumerSnapshot,
    CreditNoteApplied,
    CreditNoteExpired,
    CreditNoteIssued,
    CreditNoteRefundRequested,
    CreditNoteVoided,
    Installment,
    InstallmentPlanCreated,
    ItemSnapshot,
    Money,
    PaymentPosted,
    PaymentStatusChanged,
    PaymentType,
    PaymentVerified,
    ReversedApplication,
    ServiceChargeIssued,
)
from shared.messaging import Delivery, EventConsumer
from shared.service import Service
from tests.conftest import Infra

pytestmark = pytest.mark.kafka

AT = datetime(2031, 3, 10, 15, 0, tzinfo=UTC)
# Made-up codes, handed to the runs in turn: no two runs of a session (one database) share one.
CURRENCIES = iter([f"Q{first}{second}" for first in "ABCDEFGHJK" for second in "LMNPRSTUVW"])


class Run:
    """One way of applying the events: a currency and prefix of its own, and kpi's consumers bound to them."""

    def __init__(self, service: Service, settings: KpiSettings) -> None:
        self.service = service
        self.currency = next(CURRENCIES)
        self.prefix = f"KB{uuid.uuid4().hex[:8]}"
        self.alerts = Alerts(self.currency)
        self.consumers = {
            s.topic: EventConsumer(
                service="kpi",
                name=s.name,
                topic=s.topic,
                handlers=s.handlers,
                session_factory=service.sessions,
                inbox=service.tables.inbox,
                batch_handler=s.batch_handler,
            )
            for s in subscriptions(settings, self.alerts)
        }

    def money(self, amount: str) -> Money:
        return Money(amount=Decimal(amount), currency=self.currency)

    async def deliver(self, topic: str, envelopes: Sequence[Envelope], *, together: bool) -> None:
        records = [Delivery(e.to_bytes(), {"content-type": CONTENT_TYPE}, e.subject.encode()) for e in envelopes]
        consumer = self.consumers[topic]
        if together:
            assert set(await consumer.deliver(records)) == {"applied"}
        else:
            for record in records:
                assert await consumer.deliver([record]) == ["applied"]

    def plain(self, row: Any) -> tuple[Any, ...]:
        return tuple(
            v.replace(self.prefix, "P").replace(self.currency, "CUR") if isinstance(v, str) else v for v in row
        )

    async def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row this run's events left, with its currency and prefix taken out."""
        mine = {
            daily_collections: daily_collections.c.currency == self.currency,
            daily_receipts: daily_receipts.c.currency == self.currency,
            daily_dues: daily_dues.c.currency == self.currency,
            daily_events: daily_events.c.currency == self.currency,
            payments: payments.c.payment_id.startswith(self.prefix),
            receivables: receivables.c.item_reference.startswith(self.prefix),
        }
        async with self.service.sessions() as session:
            return {
                table.name: sorted(self.plain(r) for r in (await session.execute(select(table).where(where))).all())
                for table, where in mine.items()
            }

    # --- the events ---

    def posted(self, n: int, amount: str, *, channel: str = "Walk-in", verification: str = "Verified") -> Envelope:
        account = f"{self.prefix}-A{n % 2}"
        data = PaymentPosted(
            payment_id=f"{self.prefix}-PAY-{n}",
            transaction_id=f"{self.prefix}-TXN-{n}",
            receipt_number=f"{self.prefix}-R-{n}",
            consumer=ConsumerSnapshot(account_number=account, name="Ada Lovelace", service_address="1 Main St"),
            item=ItemSnapshot(
                payment_type=PaymentType.BILL,
                item_reference=f"{self.prefix}-INV-{n % 3}",
                description="Bill",
                issued_on=date(2031, 2, 25) if n % 4 else None,
                due=self.money(amount),
            ),
            channel=channel,
            method="Card" if channel == "Online" else "Cash",
            amount=self.money(amount),
            payment_date=date(2031, 3, 1) + timedelta(days=n % 3),
            posted_at=AT + timedelta(hours=n * 3),  # across two local days
            received_by="Jane Smith",
            status="Posted",
            verification=verification,
            difference=self.money("0.00"),
            outcome="exact",
        )
        return new_envelope("payment.posted", source="payments", subject=account, data=data)

    def status(self, n: int, previous: str, status: str) -> Envelope:
        data = PaymentStatusChanged(
            payment_id=f"{self.prefix}-PAY-{n}",
            receipt_number=f"{self.prefix}-R-{n}",
            account_number=f"{self.prefix}-A{n % 2}",
            previous_status=previous,
            status=status,
            changed_at=AT + timedelta(days=1),
        )
        return new_envelope("payment.status_changed", source="payments", subject=data.account_number, data=data)

    def verified(self, n: int) -> Envelope:
        data = PaymentVerified(
            payment_id=f"{self.prefix}-PAY-{n}",
            receipt_number=f"{self.prefix}-R-{n}",
            account_number=f"{self.prefix}-A{n % 2}",
            verified_by="Staff",
            verified_at=AT + timedelta(days=1),
        )
        return new_envelope("payment.verified", source="payments", subject=data.account_number, data=data)

    def bill(self, invoice: int, amount: str, due: date, *, source: str = "billing") -> Envelope:
        data = BillIssued(
            invoice_number=f"{self.prefix}-INV-{invoice}",
            account_number=f"{self.prefix}-A0",
            billing_period="2031-02",
            issued_on=date(2031, 2, 25),
            due_date=due,
            amount=self.money(amount),
        )
        return new_envelope("bill.issued", source=source, subject=data.account_number, data=data)

    def payments_history(self) -> list[Envelope]:
        """Payments over three days and two posting days: one posted twice (a new event id), one refunded and
        posted again as collected, one Pending verified, one failing online before it posts, and a
        charge-back of a payment posted in the same batch."""
        return [
            self.posted(1, "10.00"),
            self.posted(2, "20.50", channel="Online", verification="Pending"),
            self.posted(3, "30.25"),
            self.posted(1, "10.00"),  # the same payment announced again
            self.status(3, "Posted", "Refunded"),
            self.posted(4, "44.44"),
            self.verified(2),
            self.status(5, "Pending", "Failed"),
            self.posted(5, "5.55", channel="Online", verification="Pending"),
            self.posted(6, "66.00"),
            self.posted(7, "7.07"),
            self.status(3, "Refunded", "Posted"),
            self.posted(8, "8.80", verification="Pending"),
        ]

    def billing_history(self) -> list[Envelope]:
        """Items issued, re-issued elsewhere and back, re-issued as they stand, an installment plan, a service
        charge, and collections' re-statement of an installment (never counted)."""
        due = date(2031, 3, 20)
        plan = InstallmentPlanCreated(
            plan_id=f"{self.prefix}-PP",
            account_number=f"{self.prefix}-A0",
            created_on=date(2031, 3, 1),
            installments=[
                Installment(number=1, amount=self.money("15.00"), due_date=date(2031, 3, 15)),
                Installment(number=2, amount=self.money("15.00"), due_date=date(2031, 4, 15)),
            ],
        )
        charge = ServiceChargeIssued(
            account_number=f"{self.prefix}-A1",
            service_charge_id=f"{self.prefix}-SC",
            description="Reconnection",
            amount=self.money("25.00"),
            service_date=date(2031, 3, 2),
            due_date=due,
        )
        return [
            self.bill(0, "100.00", due),
            self.bill(1, "60.00", due),
            self.bill(0, "120.00", date(2031, 4, 5)),  # re-issued: another day and amount
            self.bill(1, "60.00", due),  # as it stands: nothing moves
            self.bill(0, "100.00", due),  # back: the April day keeps a row at zero
            new_envelope("installment_plan.created", source="billing", subject=plan.account_number, data=plan),
            new_envelope("service_charge.issued", source="billing", subject=charge.account_number, data=charge),
            self.bill(2, "999.00", due, source="collections"),
            self.bill(2, "40.00", due),
            self.bill(1, "61.00", due),
        ]

    def credit_notes_history(self) -> list[Envelope]:
        def note(n: int) -> str:
            return f"{self.prefix}-CN-{n}"

        account = f"{self.prefix}-A0"
        issued = [
            CreditNoteIssued(
                credit_note_number=note(n),
                account_number=account,
                consumer_name="Ada",
                receipt_number=f"{self.prefix}-R-{n}",
                payment_id=f"{self.prefix}-PAY-{n}",
                amount=self.money(f"{n}.50"),
                reason="overpayment",
                created_by="System",
                created_at=AT + timedelta(hours=n * 7),
                expires_at=AT + timedelta(days=365),
            )
            for n in range(1, 4)
        ]
        applied = CreditNoteApplied(
            credit_note_number=note(1),
            account_number=account,
            payment_type=PaymentType.BILL,
            item_reference=f"{self.prefix}-INV-1",
            applied=self.money("1.00"),
            remaining=self.money("0.50"),
            status="Active",
            applied_by="Staff",
            applied_at=AT,
        )
        voided = CreditNoteVoided(
            credit_note_number=note(1),
            account_number=account,
            receipt_number=f"{self.prefix}-R-1",
            payment_id=f"{self.prefix}-PAY-1",
            voided=self.money("0.50"),
            reversed=[
                ReversedApplication(
                    application_id="AP-1",
                    payment_type=PaymentType.BILL,
                    item_reference=f"{self.prefix}-INV-1",
                    amount=self.money("1.00"),
                    applied_at=AT,
                )
            ],
            remaining=self.money("0.00"),
            status="Voided",
            reason="payment cancelled",
            voided_by="Admin",
            voided_at=AT + timedelta(days=2),
        )
        expired = CreditNoteExpired(
            credit_note_number=note(2), account_number=account, remaining=self.money("2.50"), expired_at=AT
        )
        refund = CreditNoteRefundRequested(
            credit_note_number=note(3),
            account_number=account,
            receipt_number=f"{self.prefix}-R-3",
            amount=self.money("3.50"),
            reason="moved out",
            requested_by="Manager",
            requested_at=AT + timedelta(days=3),
        )
        kinds = ["credit_note.issued"] * 3 + [
            "credit_note.applied",
            "credit_note.voided",
            "credit_note.expired",
            "credit_note.refund_requested",
        ]
        return [
            new_envelope(kind, source="credit_notes", subject=account, data=data)
            for kind, data in zip(kinds, [*issued, applied, voided, expired, refund], strict=True)
        ]


@pytest.fixture(scope="module")
async def kpi(infra: Infra) -> AsyncIterator[tuple[Service, KpiSettings]]:
    settings = KpiSettings(
        database_url=infra.database_url, kafka_bootstrap_servers=infra.bootstrap_servers, development=True
    )
    service = create_service(settings)
    try:
        yield service, settings
    finally:
        await service.engine.dispose()


@contextmanager
def statements_run(service: Service) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(service.engine.sync_engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(service.engine.sync_engine, "before_cursor_execute", count)


async def backlog(service: Service) -> int:
    async with service.sessions() as session:
        found = (await session.execute(select(verification_backlog.c.pending))).scalar_one_or_none()
        return int(found or 0)


async def apply_all(run: Run, *, together: bool) -> int:
    """Billing, then payments, then credit notes; returns how much the verification backlog moved."""
    before = await backlog(run.service)
    await run.deliver(Topic.BILLING_RECEIVABLES, run.billing_history(), together=together)
    await run.deliver(Topic.PAYMENTS_EVENTS, run.payments_history(), together=together)
    await run.deliver(Topic.CREDITNOTES_EVENTS, run.credit_notes_history(), together=together)
    return await backlog(run.service) - before


async def test_a_batch_leaves_the_rows_and_totals_one_by_one_leaves(
    kpi: tuple[Service, KpiSettings], caplog: pytest.LogCaptureFixture
) -> None:
    batched, alone = Run(*kpi), Run(*kpi)
    caplog.set_level(logging.WARNING, logger="shared.messaging")
    pending_batched = await apply_all(batched, together=True)
    # Applied as batches, not rolled back and applied again one by one.
    assert not [r for r in caplog.records if r.getMessage().startswith("batch rolled back")]
    pending_alone = await apply_all(alone, together=False)

    rows = await batched.rows()
    assert rows == await alone.rows()
    assert pending_batched == pending_alone == 2  # payments 5 and 8; 2 was verified

    # The totals are exact: every payment posted once, 3 back in after its refund, 5 posted after failing.
    collected = sum(r[6] for r in rows["daily_collections"])
    assert (sum(r[5] for r in rows["daily_collections"]), collected) == (8, Decimal("192.61"))
    assert sum(r[3] for r in rows["daily_receipts"]) == collected
    assert len(rows["payments"]) == 8
    # Billing: INV-0 back on its first day with April's row left at zero, INV-1 re-issued at 61, collections'
    # re-statement never counted, two installments and a service charge.
    dues = {(r[0], r[2]): (r[3], r[4]) for r in rows["daily_dues"]}
    assert dues[(date(2031, 4, 5), "bill")] == (0, Decimal("0.00"))
    assert dues[(date(2031, 3, 20), "bill")] == (3, Decimal("201.00"))
    assert sorted(r[:2] for r in rows["receivables"]) == [
        ("bill", "P-INV-0"),
        ("bill", "P-INV-1"),
        ("bill", "P-INV-2"),
        ("installment", "P-PP/1"),
        ("installment", "P-PP/2"),
        ("service", "P-SC"),
    ]
    events = {(r[1], r[0]): (r[3], r[4]) for r in rows["daily_events"]}
    assert events[("credit_notes_applied", AT.date())] == (1, Decimal("0.00"))  # applied, then reversed
    assert events[("payments_refunded", date(2031, 3, 11))] == (1, Decimal("30.25"))


async def test_the_common_case_is_a_fixed_handful_of_statements(kpi: tuple[Service, KpiSettings]) -> None:
    run = Run(*kpi)
    payments_batch = [run.posted(n, f"{n}.25", verification="Pending" if n % 5 else "Verified") for n in range(60)]
    bills = [run.bill(n, f"{n}.10", date(2031, 3, 1) + timedelta(days=n % 20)) for n in range(60)]
    for topic, batch in (
        (Topic.PAYMENTS_EVENTS, payments_batch),
        (Topic.BILLING_RECEIVABLES, bills),
        (Topic.CREDITNOTES_EVENTS, run.credit_notes_history()),
    ):
        with statements_run(run.service) as statements:
            await run.deliver(topic, batch, together=True)
        # Not counted: transaction control, and the alert rules read now and then by their cache.
        applying = [s for s in statements if not s.startswith(("BEGIN", "COMMIT")) and "alert_rules" not in s]
        # The inbox claim, then: payments, collections, receipts, backlog / items read, items, dues / the counts.
        expected = {Topic.PAYMENTS_EVENTS: 5, Topic.BILLING_RECEIVABLES: 4, Topic.CREDITNOTES_EVENTS: 2}[topic]
        assert len(applying) == expected, applying
    rows = await run.rows()
    assert sum(r[5] for r in rows["daily_collections"]) == 60
    assert sum(r[6] for r in rows["daily_collections"]) == sum(Decimal(f"{n}.25") for n in range(60))
    assert sum(r[3] for r in rows["daily_dues"]) == 60


@asynccontextmanager
async def alert_rules_of(run: Run, *rules: tuple[str, str, str]) -> AsyncIterator[list[str]]:
    ids = [f"AL-{run.prefix}-{n}" for n in range(len(rules))]
    async with run.service.sessions() as session, session.begin():
        await session.execute(
            insert(alert_rules),
            [
                {
                    "alert_id": alert_id,
                    "metric": metric,
                    "comparison": comparison,
                    "threshold": Decimal(threshold),
                    "created_by": "Test",
                }
                for alert_id, (metric, comparison, threshold) in zip(ids, rules, strict=True)
            ],
        )
    try:
        yield ids
    finally:
        async with run.service.sessions() as session, session.begin():
            await session.execute(delete(alert_rules).where(alert_rules.c.alert_id.in_(ids)))


async def raised(run: Run, alert_ids: list[str], pending_before: int) -> list[tuple[str, str, str]]:
    """The alerts staged for these rules, in order; pending verifications counted from where the run began."""
    async with run.service.sessions() as session:
        found = await session.execute(
            select(plumbing.outbox.c.value)
            .where(plumbing.outbox.c.topic == Topic.KPI_ALERTS)
            .order_by(plumbing.outbox.c.id)
        )
        alerts = [json.loads(value)["data"] for (value,) in found]
    return [
        (
            a["metric"],
            a["period"],
            str(int(Decimal(a["value"])) - pending_before) if a["metric"] == "pending_verifications" else a["value"],
        )
        for a in alerts
        if a["alert_id"] in alert_ids
    ]


async def rate_states(run: Run, alert_id: str) -> list[tuple[Any, ...]]:
    async with run.service.sessions() as session:
        found = await session.execute(
            select(alert_states.c.window, alert_states.c.breached, alert_states.c.value, alert_states.c.raised_count)
            .where(alert_states.c.alert_id == alert_id)
            .order_by(alert_states.c.window)
        )
        return [tuple(row) for row in found]


async def test_alerts_are_raised_by_the_same_events_in_a_batch(
    kpi: tuple[Service, KpiSettings], caplog: pytest.LogCaptureFixture
) -> None:
    """While rules watch the collection rate and the pending verifications, the value after each event decides.
    Rate below 50 %: the bill (0 %), moved to April (March has no rate, April 0 %) and back (0 %); payments 30 %,
    70 %, the second refunded (30 %: a crossing again), 80 %, 81 %. Pending verifications above one more than
    before: the second Pending payment, the third after the refund took one off, the fourth after a verification
    did."""
    caplog.set_level(logging.WARNING, logger="shared.messaging")
    outcomes: list[Any] = []
    for together in (True, False):
        run = Run(*kpi)
        pending_before = await backlog(run.service)
        rules = (("collection_rate", "below", "50"), ("pending_verifications", "above", str(pending_before + 1)))
        async with alert_rules_of(run, *rules) as alert_ids:
            march, april = date(2031, 3, 20), date(2031, 4, 5)
            bills = [run.bill(9, "100.00", march), run.bill(9, "100.00", april), run.bill(9, "100.00", march)]
            await run.deliver(Topic.BILLING_RECEIVABLES, bills, together=together)
            history = [
                run.posted(1, "30.00", verification="Pending"),
                run.posted(2, "40.00", verification="Pending"),
                run.status(2, "Posted", "Refunded"),
                run.posted(3, "50.00", verification="Pending"),
                run.verified(1),
                run.posted(4, "1.00", verification="Pending"),
            ]
            await run.deliver(Topic.PAYMENTS_EVENTS, history, together=together)
            outcomes.append((await raised(run, alert_ids, pending_before), await rate_states(run, alert_ids[0])))
            outcomes.append(await run.rows())
    assert not [r for r in caplog.records if r.getMessage().startswith("batch rolled back")]
    assert outcomes[0] == outcomes[2]
    assert outcomes[1] == outcomes[3]
    alerts, states = outcomes[0]
    assert alerts == [
        ("collection_rate", "2031-03", "0.00"),
        ("collection_rate", "2031-04", "0.00"),
        ("collection_rate", "2031-03", "0.00"),
        ("pending_verifications", "current", "2"),
        ("collection_rate", "2031-03", "30.00"),
        ("pending_verifications", "current", "2"),
        ("pending_verifications", "current", "2"),
    ]
    assert states == [("2031-03", False, Decimal("81.00"), 3), ("2031-04", False, None, 1)]
