"""KPI's projections of collections' payment arrangements (`collections.events.v1`): what plans recovered, by
payment date (`recovered_this_month`), each installment's outcome by its due date (`payment_plan_compliance`),
and installments missed per day (with its alert rule). Same transaction and inbox rules as `projections.py`; the
rebuild replays these handlers too.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.kpi import domain
from services.kpi.alerts import Alerts
from services.kpi.domain import CountedEvent, PlanOutcome
from services.kpi.projections import _bump, _count_event
from services.kpi.storage import daily_plan_outcomes, plan_installments
from shared.contracts import Envelope, Topic, parse_data
from shared.contracts.events import (
    ArrangementCreated,
    ArrangementInstallment,
    ArrangementModified,
    ArrangementPaymentApplied,
    InstallmentMissed,
)
from shared.messaging import Subscription

ZERO = Decimal("0.00")


class ArrangementFigures:
    def __init__(self, *, alerts: Alerts, replaying: bool = False) -> None:
        self.alerts = alerts
        self.replaying = replaying

    def subscriptions(self) -> list[Subscription]:
        return [
            Subscription(
                "collections",
                Topic.COLLECTIONS_EVENTS,
                {
                    "arrangement.created": self.on_arrangement_created,
                    "arrangement.modified": self.on_arrangement_modified,
                    "arrangement.payment_applied": self.on_payment_applied,
                    "installment.missed": self.on_installment_missed,
                },
            )
        ]

    async def on_arrangement_created(self, session: AsyncSession, envelope: Envelope) -> None:
        created = parse_data(envelope, ArrangementCreated)
        await _schedule(session, created.arrangement_id, created.installments, created.grace_days)

    async def on_arrangement_modified(self, session: AsyncSession, envelope: Envelope) -> None:
        """The unpaid rest rescheduled under a new plan id, with the arrangement's grace (the withdrawn
        installments keep whatever outcome they reached)."""
        modified = parse_data(envelope, ArrangementModified)
        grace = (
            await session.execute(
                select(func.max(plan_installments.c.grace_days)).where(
                    plan_installments.c.arrangement_id == modified.arrangement_id
                )
            )
        ).scalar_one_or_none()
        await _schedule(session, modified.arrangement_id, modified.installments, grace or 0)

    async def on_payment_applied(self, session: AsyncSession, envelope: Envelope) -> None:
        """Money an arrangement received (or lost back), counted on the payment's date; each installment it paid
        may now be kept or paid late."""
        applied = parse_data(envelope, ArrangementPaymentApplied)
        sign = -1 if applied.reversed else 1
        amount = applied.amount
        if amount.amount > 0:
            await _count_event(
                session, applied.paid_on, CountedEvent.PLAN_PAYMENTS_RECOVERED, amount.currency, amount.amount, sign
            )
        for allocation in applied.allocations:
            row = await _installment(session, allocation.item_reference)
            if row is None:
                continue  # an installment of an arrangement created before kpi listened: no outcome to move
            paid = row["paid"] + sign * allocation.amount.amount
            settled_on = row["settled_on"]
            if paid >= row["amount"] and settled_on is None:
                settled_on = applied.paid_on
            elif paid < row["amount"]:
                settled_on = None
            await _update(session, row, paid=paid, settled_on=settled_on)

    async def on_installment_missed(self, session: AsyncSession, envelope: Envelope) -> None:
        missed = parse_data(envelope, InstallmentMissed)
        row = await _installment(session, missed.item_reference)
        if row is not None:
            if row["missed"]:
                return  # announced once by collections; never count it twice
            await _update(session, row, missed=True)
        await _count_event(
            session, missed.missed_on, CountedEvent.INSTALLMENTS_MISSED, missed.unpaid.currency, missed.unpaid.amount
        )
        if not self.replaying:
            await self.alerts.check_missed_installments(session, missed.missed_on)


async def _schedule(
    session: AsyncSession, arrangement_id: str, installments: list[ArrangementInstallment], grace_days: int
) -> None:
    for installment in installments:
        await session.execute(
            pg_insert(plan_installments)
            .values(
                item_reference=installment.item_reference,
                arrangement_id=arrangement_id,
                due_date=installment.due_date,
                amount=installment.amount.amount,
                currency=installment.amount.currency,
                grace_days=grace_days,
                paid=ZERO,
                missed=False,
            )
            .on_conflict_do_nothing()
        )


async def _installment(session: AsyncSession, reference: str) -> dict[str, Any] | None:
    query = select(plan_installments).where(plan_installments.c.item_reference == reference).with_for_update()
    found = (await session.execute(query)).mappings().first()
    return dict(found) if found is not None else None


async def _update(session: AsyncSession, row: dict[str, Any], **changes: Any) -> None:
    """Change an installment and move its outcome between the counts of its due date."""
    after = row | changes
    outcome = domain.installment_outcome(
        amount=after["amount"],
        paid=after["paid"],
        settled_on=after["settled_on"],
        due_date=after["due_date"],
        grace_days=after["grace_days"],
        missed=after["missed"],
    )
    before = PlanOutcome(row["outcome"]) if row["outcome"] else None
    await session.execute(
        update(plan_installments)
        .where(plan_installments.c.item_reference == row["item_reference"])
        .values(**changes, outcome=outcome.value if outcome else None)
    )
    if outcome == before:
        return
    counters = {o.value: (1 if o is outcome else 0) - (1 if o is before else 0) for o in PlanOutcome}
    await _bump(session, daily_plan_outcomes, {"day": row["due_date"], "currency": row["currency"]}, counters)


def subscriptions(alerts: Alerts, *, replaying: bool = False) -> list[Subscription]:
    return ArrangementFigures(alerts=alerts, replaying=replaying).subscriptions()
