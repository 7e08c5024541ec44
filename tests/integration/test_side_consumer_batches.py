"""Payouts' and reconciliation's consumers of payments.events.v1 applying a delivery batch at a time, on the real
database and broker: a batch leaves exactly the rows one event at a time leaves (payments, commission lines and
their reversals, expected bank items, online payments linked to their intents), in a fixed number of statements,
and a bad event goes to the DLQ alone."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, cast

import pytest
from sqlalchemy import Table, insert, select

from services.payouts.app import PayoutsService
from services.payouts.app import create_service as create_payouts
from services.payouts.commands import add_rule
from services.payouts.domain import CommissionRule, RuleKind, Tier
from services.payouts.payees import PayeeDraft, create_payee
from services.payouts.settings import PayoutsSettings
from services.payouts.storage import lines
from services.payouts.storage import payments as payouts_payments
from services.reconciliation.app import ReconciliationService
from services.reconciliation.app import create_service as create_reconciliation
from services.reconciliation.settings import ReconciliationSettings
from services.reconciliation.storage import expected_items, gateway_intents
from services.reconciliation.storage import payments as reconciliation_payments
from shared.contracts import CONTENT_TYPE, Envelope, Topic, new_envelope
from shared.contracts.events import Money, PaymentCancelled, PaymentStatusChanged
from shared.messaging import Delivery, EventConsumer
from shared.service import Service
from tests.conftest import Infra
from tests.integration.test_kpi_batches import statements_run
from tests.support.helpers import counter_payment, payment_overpaid, running

pytestmark = pytest.mark.kafka

DAY = date(2031, 5, 14)
AT = datetime(2031, 5, 14, 16, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
async def payouts(infra: Infra) -> AsyncIterator[PayoutsService]:
    settings = PayoutsSettings(
        database_url=infra.database_url,
        kafka_bootstrap_servers=infra.bootstrap_servers,
        development=True,
        schedule_check_seconds=0,
    )
    service = create_payouts(settings)
    async with running(service):
        yield service


@pytest.fixture(scope="module")
async def reconciliation(infra: Infra) -> AsyncIterator[ReconciliationService]:
    settings = ReconciliationSettings(
        database_url=infra.database_url,
        kafka_bootstrap_servers=infra.bootstrap_servers,
        development=True,
        missing_check_seconds=3600,
    )
    service = create_reconciliation(settings)
    async with running(service):
        yield service


def records(envelopes: Sequence[Envelope]) -> list[Delivery]:
    return [Delivery(e.to_bytes(), {"content-type": CONTENT_TYPE.encode()}, e.subject.encode()) for e in envelopes]


def consumer(service: Service) -> EventConsumer:
    return next(c for c in service.event_consumers if c.topic == Topic.PAYMENTS_EVENTS)


async def deliver(service: Service, envelopes: Sequence[Envelope], *, together: bool) -> None:
    if together:
        outcomes = await consumer(service).deliver(records(envelopes))
        assert set(outcomes) <= {"applied", "ignored"}, outcomes
    else:
        for record in records(envelopes):
            assert (await consumer(service).deliver([record]))[0] in ("applied", "ignored")


def applying_statements(statements: list[str]) -> list[str]:
    """What the consumer ran: not transaction control, nor the outbox relay polling in the background."""
    return [
        s for s in statements if not s.startswith(("BEGIN", "COMMIT")) and ".outbox" not in s and "advisory" not in s
    ]


def again(envelope: Envelope) -> Envelope:
    """The same posting announced again under another event id (not a redelivery: the inbox lets it in)."""
    return envelope.model_copy(update={"id": uuid.uuid4()})


class History:
    """One way of applying the events: ids of its own under `prefix`, the rows it left with `prefix` taken out."""

    def __init__(self) -> None:
        self.prefix = f"SB{uuid.uuid4().hex[:8].upper()}"

    def posted(self, n: int, amount: str, *, channel: str = "Walk-in", method: str = "Cash", item: int = 0) -> Envelope:
        event = counter_payment(
            f"{self.prefix}-ACC",
            receipt_number=f"{self.prefix}-R{n}",
            amount=amount,
            due=amount,
            item_reference=f"{self.prefix}-INV-{item}",
            method=method,
            day=DAY,
        )
        event.data["channel"] = channel
        return event

    def cancelled(self, n: int, amount: str) -> Envelope:
        data = PaymentCancelled(
            payment_id=f"PAY-{self.prefix}-R{n}",
            receipt_number=f"{self.prefix}-R{n}",
            account_number=f"{self.prefix}-ACC",
            amount=Money(amount=Decimal(amount)),
            reason="keyed twice",
            cancelled_by="Bill Manager",
            cancelled_at=AT,
        )
        return new_envelope("payment.cancelled", source="payments", subject=data.account_number, data=data)

    def refunded(self, n: int) -> Envelope:
        data = PaymentStatusChanged(
            payment_id=f"PAY-{self.prefix}-R{n}",
            receipt_number=f"{self.prefix}-R{n}",
            account_number=f"{self.prefix}-ACC",
            previous_status="Posted",
            status="Refunded",
            changed_at=AT,
        )
        return new_envelope("payment.status_changed", source="payments", subject=data.account_number, data=data)

    def plain(self, row: Any, *replace: tuple[str, str]) -> tuple[Any, ...]:
        def clean(value: Any) -> Any:
            if not isinstance(value, str):
                return value
            for old, new in ((self.prefix, "P"), *replace):
                value = value.replace(old, new)
            return value

        return tuple(clean(v) for v in row)

    async def rows(self, service: Service, tables: dict[Table, Any], *replace: tuple[str, str]) -> dict[str, Any]:
        async with service.sessions() as session:
            return {
                table.name: sorted(
                    self.plain(r, *replace) for r in (await session.execute(select(*columns).where(where))).all()
                )
                for table, (columns, where) in tables.items()
            }


async def agent(service: PayoutsService, channel: str, *, tiered: bool = False) -> str:
    """An agent paid 2% of what it collects through `channel`; `tiered`: 1% of the month's first 150, then 5%,
    at most 12.00 a month."""
    draft = PayeeDraft(
        name=f"Agent {channel}",
        payee_type="agent",
        country="US",
        payout_currency="USD",
        method="stripe",
        stripe_account=f"acct_{uuid.uuid4().hex[:16]}",
        agent_channel=channel,
    )
    async with service.sessions() as session, session.begin():
        payee_id = await create_payee(session, draft, actor="test", idempotency_key=uuid.uuid4().hex)
        rule = CommissionRule(
            rule_id="",
            kind=RuleKind.PERCENTAGE,
            currency="USD",
            effective_from=date(2031, 1, 1),
            percent=Decimal("2"),
            payee_id=payee_id,
        )
        if tiered:
            rule = replace(
                rule,
                kind=RuleKind.TIERED,
                percent=None,
                tiers=(Tier(Decimal(0), Decimal(1)), Tier(Decimal(150), Decimal(5))),
                cap_per_month=Decimal("12.00"),
            )
        await add_rule(session, rule, actor="test")
    return payee_id


class TestPayoutsBatches:
    def history(self, run: History, agent_channel: str) -> list[Envelope]:
        """Counter payments no agent earns on and an agent's collections, one cancelled and one refunded (their
        commissions reversed), a posting announced twice, and an overpayment payouts does not handle."""
        first = run.posted(1, "40.00")
        return [
            first,
            run.posted(2, "100.00", channel=agent_channel),
            run.posted(3, "250.00", channel=agent_channel),
            payment_overpaid(first),
            run.cancelled(2, "100.00"),
            run.posted(4, "60.00", method="Check"),
            again(first),
            run.refunded(3),
            run.refunded(4),
            run.posted(5, "80.00", channel=agent_channel),
            again(run.posted(5, "80.00", channel=agent_channel)),
        ]

    async def rows(self, service: PayoutsService, run: History, payee_id: str) -> dict[str, Any]:
        p, ln = payouts_payments.c, lines.c
        return await run.rows(
            service,
            {
                payouts_payments: (
                    (p.receipt_number, p.channel, p.amount, p.status, p.payee_id),
                    p.receipt_number.startswith(run.prefix),
                ),
                lines: (
                    (
                        ln.line_id,
                        ln.payee_id,
                        ln.kind,
                        ln.amount,
                        ln.source_ref,
                        ln.description,
                        ln.status,
                        ln.calculation["month_volume_before"].astext,
                        ln.calculation["month_commission_before"].astext,
                    ),
                    ln.source_ref.startswith(run.prefix),
                ),
            },
            (payee_id, "AGENT"),
        )

    async def test_a_batch_leaves_the_payments_and_commissions_one_by_one_leaves(self, payouts: PayoutsService) -> None:
        batched, alone = History(), History()
        results = []
        for run, together in ((batched, True), (alone, False)):
            channel = f"Agent {run.prefix}"
            payee_id = await agent(payouts, channel)
            await deliver(payouts, self.history(run, channel), together=together)
            results.append(await self.rows(payouts, run, payee_id))
        assert results[0] == results[1]
        rows = results[0]
        assert [(r[0], r[2], r[3], r[4]) for r in rows["payments"]] == [
            ("P-R1", Decimal("40.00"), "Posted", None),
            ("P-R2", Decimal("100.00"), "Cancelled", "AGENT"),
            ("P-R3", Decimal("250.00"), "Refunded", "AGENT"),
            ("P-R4", Decimal("60.00"), "Refunded", None),
            ("P-R5", Decimal("80.00"), "Posted", "AGENT"),
        ]
        assert [(r[0], r[3]) for r in rows["earning_lines"]] == [
            ("COM-P-R2", Decimal("2.00")),
            ("COM-P-R3", Decimal("5.00")),
            ("COM-P-R5", Decimal("1.60")),
            ("REV-COM-P-R2", Decimal("-2.00")),
            ("REV-COM-P-R3", Decimal("-5.00")),
        ]

    async def test_tiered_commissions_on_the_month_to_date_are_the_ones_one_by_one_works_out(
        self, payouts: PayoutsService
    ) -> None:
        """Each payment's commission depends on the agent's month so far: the run's earlier payments and
        commissions, a cancellation between two runs, another month, and the monthly cap."""
        batched, alone = History(), History()
        results = []
        for run, together in ((batched, True), (alone, False)):
            channel = f"Agent {run.prefix}"
            payee_id = await agent(payouts, channel, tiered=True)
            later = run.posted(6, "90.00", channel=channel)
            later.data["payment_date"] = "2031-06-02"
            history = [
                run.posted(1, "100.00", channel=channel),
                run.posted(2, "80.00", channel=channel),
                run.posted(3, "20.00"),
                later,
                run.cancelled(1, "100.00"),
                run.posted(4, "120.00", channel=channel),
                run.posted(5, "200.00", channel=channel),
                again(run.posted(4, "120.00", channel=channel)),
            ]
            await deliver(payouts, history, together=together)
            results.append(await self.rows(payouts, run, payee_id))
        assert results[0] == results[1]
        commissions = [(r[0], r[3], r[7], r[8]) for r in results[0]["earning_lines"]]
        assert commissions == [
            ("COM-P-R1", Decimal("1.00"), "0", "0"),
            ("COM-P-R2", Decimal("2.00"), "100.00", "1.00"),  # 50 at 1%, 30 at 5%
            # R1 cancelled: 80 collected so far; 70 at 1%, 50 at 5%. Its commission still counts toward the cap.
            ("COM-P-R4", Decimal("3.20"), "80.00", "3.00"),
            ("COM-P-R5", Decimal("5.80"), "200.00", "6.20"),  # 10.00 at 5%, capped at 12.00 for the month
            ("COM-P-R6", Decimal("0.90"), "0", "0"),  # June starts afresh
            ("REV-COM-P-R1", Decimal("-1.00"), None, None),
        ]

    async def test_payments_no_agent_earns_on_take_a_fixed_handful_of_statements(self, payouts: PayoutsService) -> None:
        run = History()
        batch = [run.posted(n, f"{n}.50") for n in range(1, 61)]
        with statements_run(payouts) as statements:
            await deliver(payouts, batch, together=True)
        applying = applying_statements(statements)
        # The inbox claim, the agents of the run's channels, the payments.
        assert len(applying) == 3, [s[:90] for s in applying]
        async with payouts.sessions() as session:
            stored = (
                await session.execute(
                    select(payouts_payments.c.receipt_number).where(
                        payouts_payments.c.receipt_number.startswith(run.prefix)
                    )
                )
            ).scalars()
            assert len(set(stored)) == 60

    async def test_a_bad_event_in_a_batch_goes_to_the_dlq_alone_and_the_others_are_stored_once(
        self, payouts: PayoutsService
    ) -> None:
        """INVARIANT: an event that cannot be applied never holds back or doubles the others of its batch."""
        run = History()
        good = [run.posted(1, "10.00"), run.posted(2, "20.00")]
        broken = good[0].model_copy(update={"id": uuid.uuid4(), "data": {"receipt_number": "nothing else"}})
        batch = records([good[0], broken, good[1]])
        assert await consumer(payouts).deliver(batch) == ["applied", "dead_lettered", "applied"]
        assert await consumer(payouts).deliver(batch) == ["duplicate", "dead_lettered", "duplicate"]
        async with payouts.sessions() as session:
            stored = (
                await session.execute(
                    select(payouts_payments.c.receipt_number).where(
                        payouts_payments.c.receipt_number.startswith(run.prefix)
                    )
                )
            ).scalars()
            assert sorted(stored) == [f"{run.prefix}-R1", f"{run.prefix}-R2"]


class TestReconciliationBatches:
    async def intents(self, service: ReconciliationService, run: History, *found: tuple[str, int, str]) -> None:
        """Payment intents the gateway announced: (id suffix, item, amount), all on the run's account."""
        async with service.sessions() as session, session.begin():
            await session.execute(
                insert(gateway_intents),
                [
                    {
                        "payment_intent_id": f"pi_{run.prefix}_{suffix}",
                        "account_number": f"{run.prefix}-ACC",
                        "item_reference": f"{run.prefix}-INV-{item}",
                        "amount": Decimal(amount),
                        "currency": "USD",
                    }
                    for suffix, item, amount in found
                ],
            )

    def history(self, run: History) -> list[Envelope]:
        """A cash and a check payment at the counter, a lockbox check, online payments (two of the same item and
        amount, a third with no intent), one announced twice, a cancellation and a refund."""
        cash = run.posted(1, "40.00")
        return [
            cash,
            run.posted(2, "55.00", method="Check"),
            run.posted(3, "70.00", channel="Online", method="Card", item=7),
            run.posted(4, "70.00", channel="Online", method="Card", item=7),
            payment_overpaid(cash),
            run.posted(5, "12.00", channel="Lockbox", method="Check", item=8),
            run.cancelled(2, "55.00"),
            again(cash),
            run.posted(6, "99.00", channel="Online", method="Card", item=9),
            run.refunded(5),
            run.posted(7, "31.00", channel="Online", method="Card", item=7),
        ]

    async def rows(self, service: ReconciliationService, run: History) -> dict[str, Any]:
        p, e = reconciliation_payments.c, expected_items.c
        return await run.rows(
            service,
            {
                reconciliation_payments: (
                    (p.payment_id, p.channel, p.method, p.amount, p.status, p.payment_intent_id),
                    p.receipt_number.startswith(run.prefix),
                ),
                expected_items: (
                    (e.item_id, e.kind, e.reference, e.group_key, e.amount, e.status, e.payment_id, e.window_days),
                    e.account_number == f"{run.prefix}-ACC",
                ),
            },
        )

    async def test_a_batch_leaves_the_payments_items_and_links_one_by_one_leaves(
        self, reconciliation: ReconciliationService
    ) -> None:
        batched, alone = History(), History()
        results = []
        for run, together in ((batched, True), (alone, False)):
            # Intent b is announced first but sorts after a: the first payment takes a, as one by one does.
            await self.intents(reconciliation, run, ("b", 7, "70.00"), ("a", 7, "70.00"), ("c", 8, "12.00"))
            await deliver(reconciliation, self.history(run), together=together)
            results.append(await self.rows(reconciliation, run))
        assert results[0] == results[1]
        rows = results[0]
        assert [(r[0], r[4], r[5]) for r in rows["payments"]] == [
            ("PAY-P-R1", "Posted", None),
            ("PAY-P-R2", "Cancelled", None),
            ("PAY-P-R3", "Posted", "pi_P_a"),
            ("PAY-P-R4", "Posted", "pi_P_b"),
            ("PAY-P-R5", "Refunded", None),
            ("PAY-P-R6", "Posted", None),
            ("PAY-P-R7", "Posted", None),
        ]
        # Cash at the counter is a deposit; the cancelled check and the refunded lockbox payment are no longer
        # expected; online payments are expected in Stripe's payouts, not here.
        assert [(r[0], r[1]) for r in rows["expected_items"]] == [("pay:PAY-P-R1", "counter")]

    async def test_a_run_of_postings_takes_a_fixed_handful_of_statements(
        self, reconciliation: ReconciliationService
    ) -> None:
        # A service of its own, not started: the running one's consumers would add their statements to the count.
        reconciliation = create_reconciliation(cast(ReconciliationSettings, reconciliation.settings))
        run = History()
        await self.intents(reconciliation, run, ("a", 1, "5.00"))
        batch = [run.posted(n, f"{n}.00", method=("Cash", "Check")[n % 2]) for n in range(2, 62)]
        batch += [run.posted(n, "5.00", channel="Online", method="Card", item=1) for n in (62, 63)]
        with statements_run(reconciliation) as statements:
            await deliver(reconciliation, batch, together=True)
        applying = applying_statements(statements)
        # The inbox claim, the payments, the expected items, the online ones' intents, the link (payment, items).
        assert len(applying) == 6, [s[:90] for s in applying]
        rows = await self.rows(reconciliation, run)
        assert len(rows["payments"]) == 62 and len(rows["expected_items"]) == 60
        assert [r[5] for r in rows["payments"] if r[1] == "Online"] == ["pi_P_a", None]

    async def test_a_bad_event_in_a_batch_goes_to_the_dlq_alone_and_the_others_are_stored_once(
        self, reconciliation: ReconciliationService
    ) -> None:
        """INVARIANT: an event that cannot be applied never holds back or doubles the others of its batch."""
        run = History()
        good = [run.posted(1, "10.00"), run.posted(2, "20.00")]
        broken = good[0].model_copy(update={"id": uuid.uuid4(), "data": {"payment_id": "nothing else"}})
        batch = records([good[0], broken, good[1]])
        assert await consumer(reconciliation).deliver(batch) == ["applied", "dead_lettered", "applied"]
        assert await consumer(reconciliation).deliver(batch) == ["duplicate", "dead_lettered", "duplicate"]
        rows = await self.rows(reconciliation, run)
        assert [r[0] for r in rows["payments"]] == ["PAY-P-R1", "PAY-P-R2"]
        assert [r[0] for r in rows["expected_items"]] == ["pay:PAY-P-R1", "pay:PAY-P-R2"]
