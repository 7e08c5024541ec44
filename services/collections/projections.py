"""Collections' read models, kept from other services' events: accounts and items from billing, and payments
matched to installments (by their `PLAN/n` reference, late or early) or to the items they paid."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.collections import batches, commands, domain, worklist
from services.collections.domain import ArrangementStatus
from services.collections.runtime import SOURCE, Desk, publish, track
from services.collections.storage import accounts, activities, arrangements, installments, items, payments, recoveries
from shared.contracts import Envelope, PaymentStatus, Topic, counts_as_collected, parse_data
from shared.contracts.events import (
    AccountUpserted,
    ArrangementPaymentApplied,
    InstallmentAllocation,
    Money,
    PaymentCancelled,
    PaymentPosted,
    PaymentStatusChanged,
    PaymentType,
)
from shared.messaging import Subscription
from shared.receivables import ITEM_EVENT_TYPES, billing_account, parse_installment_reference, receivable_items

ITEM_COLUMNS = ("payment_type", "item_reference", "account_number", "description", "amount", "currency", "due_date")


class Projections:
    """The handlers; they share the desk (clock and rules) the worklist is computed with."""

    def __init__(self, desk: Desk) -> None:
        self.desk = desk

    # --- billing.receivables.v1 ---

    async def on_account_upserted(self, session: AsyncSession, envelope: Envelope) -> None:
        account = billing_account(parse_data(envelope, AccountUpserted))
        values = {"name": account.name, "currency": account.currency}
        await session.execute(
            pg_insert(accounts)
            .values(account_number=account.account_number, **values)
            .on_conflict_do_update(index_elements=["account_number"], set_=values)
        )

    async def on_receivable_issued(self, session: AsyncSession, envelope: Envelope) -> None:
        """A bill, service charge or billing's installment: something owed. Our own installments are not items:
        they re-state covered debt, which the arrangement already counts."""
        if envelope.source == SOURCE:
            return
        found = receivable_items(envelope)
        for item in found:
            values = item.as_row(*ITEM_COLUMNS)
            changes = {k: v for k, v in values.items() if k not in ("payment_type", "item_reference")}
            await session.execute(
                pg_insert(items)
                .values(**values)
                .on_conflict_do_update(index_elements=["payment_type", "item_reference"], set_=changes)
            )
        for account in {item.account_number for item in found}:
            await worklist.refresh_account(session, account, self.desk)

    # --- payments.events.v1 ---

    async def on_payment_posted(self, session: AsyncSession, envelope: Envelope) -> None:
        posted = parse_data(envelope, PaymentPosted)
        inserted = (
            await session.execute(
                pg_insert(payments)
                .values(
                    receipt_number=posted.receipt_number,
                    payment_id=posted.payment_id,
                    account_number=posted.consumer.account_number,
                    payment_type=posted.item.payment_type.value,
                    item_reference=posted.item.item_reference,
                    amount=posted.amount.amount,
                    payment_date=posted.payment_date,
                    method=posted.method,
                    received_by=posted.received_by,
                    status=posted.status,
                )
                .on_conflict_do_nothing()
                .returning(*payments.c)  # the new row, locked by its insert: no second read
            )
        ).first()
        if inserted is None:
            return  # the same payment announced again
        await session.execute(
            update(accounts)
            .where(accounts.c.account_number == posted.consumer.account_number, accounts.c.name == "")
            .values(name=posted.consumer.name)
        )
        if counts_as_collected(posted.status):
            arrangement_id = await self._apply(session, inserted, due=posted.item.due.amount)
            if arrangement_id is not None:  # only a plan's payment is tracked: a bill's is not read back for it
                properties = await self._payment_properties(session, posted)
                await track(session, "plan_payment_recorded", posted.received_by, properties, at=self.desk.clock.now())
        await worklist.refresh_account(session, posted.consumer.account_number, self.desk)

    async def on_payment_cancelled(self, session: AsyncSession, envelope: Envelope) -> None:
        cancelled = parse_data(envelope, PaymentCancelled)
        await self._status(session, cancelled.receipt_number, PaymentStatus.CANCELLED)

    async def on_payment_status_changed(self, session: AsyncSession, envelope: Envelope) -> None:
        changed = parse_data(envelope, PaymentStatusChanged)
        await self._status(session, changed.receipt_number, changed.status)

    async def _status(self, session: AsyncSession, receipt_number: str, status: str) -> None:
        payment = await _locked_payment(session, receipt_number)
        if payment is None:
            return  # never posted: it never counted here, so nothing to take back
        was, now = counts_as_collected(payment.status), counts_as_collected(status)
        await session.execute(update(payments).where(payments.c.receipt_number == receipt_number).values(status=status))
        if was and not now:
            await self._reverse(session, payment)
        elif now and not was:
            await self._apply(session, payment, due=payment.amount)
        await worklist.refresh_account(session, payment.account_number, self.desk)

    # --- matching ---

    async def _arrangement_for(self, session: AsyncSession, payment: Row[Any]) -> tuple[str | None, int | None]:
        """The arrangement a payment belongs to and the installment it names, if any."""
        if payment.payment_type == PaymentType.INSTALLMENT.value:
            reference = parse_installment_reference(payment.item_reference)
            found = (
                await session.execute(
                    select(installments.c.arrangement_id).where(
                        installments.c.plan_id == reference.plan_id, installments.c.number == reference.number
                    )
                )
            ).first()
            if found is not None:
                current = (
                    await session.execute(
                        select(arrangements.c.plan_id).where(arrangements.c.arrangement_id == found.arrangement_id)
                    )
                ).scalar_one()
                return found.arrangement_id, reference.number if current == reference.plan_id else None
        covered = (
            await session.execute(
                select(items.c.arrangement_id).where(
                    items.c.payment_type == payment.payment_type, items.c.item_reference == payment.item_reference
                )
            )
        ).scalar_one_or_none()
        return covered, None

    async def _apply(self, session: AsyncSession, payment: Row[Any], *, due: Decimal) -> str | None:
        """Count the payment toward its item or its arrangement; returns the arrangement's id (None: an item)."""
        arrangement_id, first = await self._arrangement_for(session, payment)
        await _keep_promises(session, payment.account_number, payment.amount)
        if arrangement_id is None:
            share = min(payment.amount, max(due, domain.ZERO))
            await _add_to_item(session, payment, share)
            await session.execute(
                update(payments).where(payments.c.receipt_number == payment.receipt_number).values(item_share=share)
            )
            return None
        # A re-aged arrangement's money goes to the settlement plan that took its balance over.
        arrangement = await commands.locked_arrangement(session, arrangement_id)
        while arrangement.status == ArrangementStatus.REAGED.value:
            successor = (
                await session.execute(
                    select(arrangements.c.arrangement_id).where(arrangements.c.reaged_from == arrangement_id)
                )
            ).scalar_one()
            arrangement_id, first = successor, None
            arrangement = await commands.locked_arrangement(session, arrangement_id)
        states = await worklist.installment_states(session, arrangement_id)
        remaining = max(arrangement.total - arrangement.paid, domain.ZERO)
        shares = domain.allocate(states, min(payment.amount, remaining), first=first)
        plans = await _plan_ids(session, arrangement_id)
        allocations = []
        for number, share in shares:
            plan_id = plans[number]
            allocations.append([plan_id, number, str(share)])
            await session.execute(
                update(installments)
                .where(installments.c.plan_id == plan_id, installments.c.number == number)
                .values(paid=installments.c.paid + share)
            )
            await session.execute(
                update(installments)
                .where(
                    installments.c.plan_id == plan_id,
                    installments.c.number == number,
                    installments.c.paid >= installments.c.amount,
                )
                .values(paid_on=payment.payment_date)
            )
        # A lapsed (broken, cancelled) plan has no open installment to take the money, but its arrears shrink.
        received = min(payment.amount, remaining)
        await session.execute(
            update(arrangements)
            .where(arrangements.c.arrangement_id == arrangement_id)
            .values(paid=arrangements.c.paid + received)
        )
        await session.execute(
            update(payments)
            .where(payments.c.receipt_number == payment.receipt_number)
            .values(arrangement_id=arrangement_id, allocations=allocations)
        )
        if received > 0:
            await session.execute(
                recoveries.insert().values(
                    arrangement_id=arrangement_id,
                    account_number=payment.account_number,
                    receipt_number=payment.receipt_number,
                    executive=arrangement.executive,
                    amount=received,
                    recovered_on=payment.payment_date,
                )
            )
        await self._announce(session, arrangement, payment, allocations, received, reversed_=False)
        if arrangement.status == ArrangementStatus.ACTIVE.value:
            refreshed = await commands.locked_arrangement(session, arrangement_id)
            if domain.is_completed(await worklist.installment_states(session, arrangement_id)):
                await commands.close(
                    session,
                    refreshed,
                    ArrangementStatus.COMPLETED,
                    reason="every installment paid",
                    actor=domain.SYSTEM,
                    desk=self.desk,
                )
        return arrangement_id

    async def _reverse(self, session: AsyncSession, payment: Row[Any]) -> None:
        """Undo exactly what the payment did: its installment shares, or its share of an item."""
        await _keep_promises(session, payment.account_number, -payment.amount)
        if payment.arrangement_id is None:
            await _add_to_item(session, payment, -payment.item_share)
            return
        arrangement = await commands.locked_arrangement(session, payment.arrangement_id)
        for plan_id, number, share in payment.allocations:
            amount = Decimal(share)
            await session.execute(
                update(installments)
                .where(installments.c.plan_id == plan_id, installments.c.number == number)
                .values(paid=installments.c.paid - amount, paid_on=None)
            )
        received = sum((Decimal(r) for r in await _recovered(session, payment.receipt_number)), domain.ZERO)
        await session.execute(
            update(arrangements)
            .where(arrangements.c.arrangement_id == arrangement.arrangement_id)
            .values(paid=arrangements.c.paid - received)
        )
        if received > 0:
            await session.execute(
                recoveries.insert().values(
                    arrangement_id=arrangement.arrangement_id,
                    account_number=payment.account_number,
                    receipt_number=payment.receipt_number,
                    executive=arrangement.executive,
                    amount=-received,
                    recovered_on=self.desk.clock.today(),
                )
            )
        if arrangement.status == ArrangementStatus.COMPLETED.value:
            # Its last payment was taken back: the plan is in force again.
            await session.execute(
                update(arrangements)
                .where(arrangements.c.arrangement_id == arrangement.arrangement_id)
                .values(status=ArrangementStatus.ACTIVE.value, closed_at=None, closed_on=None, closed_reason=None)
            )
        await self._announce(session, arrangement, payment, payment.allocations, received, reversed_=True)

    async def _announce(
        self,
        session: AsyncSession,
        arrangement: Row[Any],
        payment: Row[Any],
        allocations: list[list[Any]],
        amount: Decimal,
        *,
        reversed_: bool,
    ) -> None:
        compliance = "reversed" if reversed_ else await _compliance(session, arrangement, allocations, self.desk)
        applied = ArrangementPaymentApplied(
            arrangement_id=arrangement.arrangement_id,
            account_number=payment.account_number,
            receipt_number=payment.receipt_number,
            payment_id=payment.payment_id,
            paid_reference=payment.item_reference,
            allocations=[
                InstallmentAllocation(
                    item_reference=f"{plan_id}/{number}",
                    amount=Money(amount=Decimal(share), currency=arrangement.currency),
                )
                for plan_id, number, share in allocations
            ],
            amount=Money(amount=amount, currency=arrangement.currency),
            paid_on=payment.payment_date,
            executive=arrangement.executive,
            reversed=reversed_,
            compliance=compliance,
        )
        await publish(session, "arrangement.payment_applied", payment.account_number, applied)

    async def _payment_properties(self, session: AsyncSession, posted: PaymentPosted) -> dict[str, object]:
        row = (await session.execute(select(payments).where(payments.c.receipt_number == posted.receipt_number))).one()
        compliance = "unmatched"
        if row.arrangement_id is not None:
            arrangement = (
                await session.execute(select(arrangements).where(arrangements.c.arrangement_id == row.arrangement_id))
            ).one()
            compliance = await _compliance(session, arrangement, row.allocations, self.desk)
        return {
            "plan_id": row.arrangement_id,
            "payment_amount": posted.amount.amount,
            "plan_compliance": compliance,
            "method_used": posted.method,
            "processing_time": max(int((self.desk.clock.now() - posted.posted_at).total_seconds()), 0),
        }


async def _compliance(session: AsyncSession, arrangement: Row[Any], allocations: list[list[Any]], desk: Desk) -> str:
    """How the payment left the installment it paid first: on time, late within grace, after a miss, or partial."""
    if not allocations:
        return "arrears"
    plan_id, number, _ = allocations[0]
    row = (
        await session.execute(
            select(installments).where(installments.c.plan_id == plan_id, installments.c.number == number)
        )
    ).one()
    state = domain.InstallmentState(row.number, row.amount, row.due_date, row.paid, row.paid_on)
    if state.unpaid > 0:
        return "partial"
    return domain.evaluate(state, grace_days=arrangement.grace_days, today=desk.clock.today()).value


async def _locked_payment(session: AsyncSession, receipt_number: str) -> Row[Any] | None:
    query = select(payments).where(payments.c.receipt_number == receipt_number).with_for_update()
    return (await session.execute(query)).first()


async def _plan_ids(session: AsyncSession, arrangement_id: str) -> dict[int, str]:
    """Installment number -> plan id among the open installments (numbers are unique among them)."""
    rows = await session.execute(
        select(installments.c.number, installments.c.plan_id).where(
            installments.c.arrangement_id == arrangement_id,
            installments.c.paid < installments.c.amount,
            installments.c.superseded.is_(False),
        )
    )
    return {r.number: r.plan_id for r in rows}


async def _recovered(session: AsyncSession, receipt_number: str) -> list[Decimal]:
    rows = await session.execute(select(recoveries.c.amount).where(recoveries.c.receipt_number == receipt_number))
    return [r.amount for r in rows]


async def _add_to_item(session: AsyncSession, payment: Row[Any], amount: Decimal) -> None:
    """Add (or take back) what a payment settled on an item, seen from billing or not yet."""
    statement = pg_insert(items).values(
        payment_type=payment.payment_type,
        item_reference=payment.item_reference,
        account_number=payment.account_number,
        paid=max(amount, domain.ZERO),
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["payment_type", "item_reference"], set_={"paid": items.c.paid + amount}
        )
    )


async def _keep_promises(session: AsyncSession, account: str, amount: Decimal) -> None:
    """Payments count toward the account's open promises to pay, oldest first; reaching the amount keeps it."""
    open_ = await session.execute(
        select(activities)
        .where(activities.c.account_number == account, activities.c.promise_status == domain.PromiseStatus.OPEN.value)
        .order_by(activities.c.created_at)
        .with_for_update()
    )
    for promise in open_:
        paid = max(promise.promise_paid + amount, domain.ZERO)
        status = domain.PromiseStatus.KEPT if paid >= promise.promise_amount else domain.PromiseStatus.OPEN
        await session.execute(
            update(activities)
            .where(activities.c.activity_id == promise.activity_id)
            .values(promise_paid=paid, promise_status=status.value)
        )


def subscriptions(desk: Desk) -> list[Subscription]:
    handlers = Projections(desk)
    billing = {"account.upserted": handlers.on_account_upserted} | dict.fromkeys(
        ITEM_EVENT_TYPES, handlers.on_receivable_issued
    )
    paid = {
        "payment.posted": handlers.on_payment_posted,
        "payment.cancelled": handlers.on_payment_cancelled,
        "payment.status_changed": handlers.on_payment_status_changed,
    }
    together = batches.Batches(desk, billing=billing, payments=paid)
    return [
        Subscription("billing", Topic.BILLING_RECEIVABLES, billing, batch_handler=together.on_billing_batch),
        Subscription("payments", Topic.PAYMENTS_EVENTS, paid, batch_handler=together.on_payments_batch),
    ]
