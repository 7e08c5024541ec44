"""Payments' commands and event handlers. Each runs inside the caller's transaction and stages its events."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Row, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import domain
from services.payments.domain import Status, Verification
from services.payments.storage import (
    accounts,
    audit_log,
    idempotency_keys,
    payment_id_seq,
    payments,
    receipt_number_seq,
    receivables,
    transaction_id_seq,
)
from services.payments.storage import settings as settings_table
from shared.contracts import Envelope, Topic, new_envelope, parse_data
from shared.contracts.events import (
    AccountUpserted,
    BillIssued,
    ConsumerSnapshot,
    CreditNoteApplied,
    CreditNoteIssued,
    GatewayPaymentStatusChanged,
    GatewaySettlementStatusChanged,
    InstallmentPlanCreated,
    ItemSnapshot,
    Money,
    PaymentCancelled,
    PaymentOverpaid,
    PaymentPosted,
    PaymentRecordRejected,
    PaymentRecordRequested,
    PaymentStatusChanged,
    PaymentType,
    PaymentVerified,
    ServiceChargeIssued,
    UsageTracked,
)
from shared.errors import Conflict, NotFound, Rejected
from shared.money import quantize
from shared.outbox import stage

SOURCE = "payments"
SYSTEM = "System"
ONLINE_CHANNEL = "Online"
SEQUENCES = {"payment_id": payment_id_seq, "transaction_id": transaction_id_seq, "receipt_number": receipt_number_seq}


async def emit(session: AsyncSession, event_type: str, subject: str, data: BaseModel, *, topic: str = "") -> None:
    """Stage an event in the outbox of the current transaction."""
    envelope = new_envelope(event_type, source=SOURCE, subject=subject, data=data)
    await stage(session, topic or Topic.PAYMENTS_EVENTS, envelope)


async def track(session: AsyncSession, event: str, user: str, subject: str, **properties: str) -> None:
    """A usage-tracking event of the seed's tracking plan."""
    usage = UsageTracked(event=event, user_id=user, properties=properties, occurred_at=datetime.now(UTC))
    await emit(session, "usage.tracked", subject, usage, topic=Topic.ANALYTICS_EVENTS)


async def audit(session: AsyncSession, actor: str, action: str, subject: str, details: dict[str, Any]) -> None:
    await session.execute(
        audit_log.insert().values(id=str(uuid.uuid4()), actor=actor, action=action, subject=subject, details=details)
    )


# --- settings ---


async def load_settings(session: AsyncSession) -> domain.PaymentSettings:
    stored = {row.key: row.value for row in await session.execute(select(settings_table))}
    defaults = domain.PaymentSettings()
    formats = stored.get("number_formats")
    return domain.PaymentSettings(
        channels=tuple(stored.get("channels", defaults.channels)),
        payment_methods=tuple(stored.get("payment_methods", defaults.payment_methods)),
        overpayment_threshold=Decimal(stored.get("overpayment_threshold", defaults.overpayment_threshold)),
        number_formats={k: domain.NumberFormat(**v) for k, v in formats.items()} if formats else None,
    )


def settings_view(current: domain.PaymentSettings) -> dict[str, Any]:
    return {
        "channels": list(current.channels),
        "default_channel": current.default_channel,
        "payment_methods": list(current.payment_methods),
        "overpayment_threshold": str(current.overpayment_threshold),
        "number_formats": {kind: asdict(current.format_for(kind)) for kind in domain.NUMBER_KINDS},
    }


async def save_setting(session: AsyncSession, key: str, value: Any, actor: str) -> domain.PaymentSettings:
    """Change one setting, with its before and after in the audit log. Locks the row against a racing change."""
    before = (
        await session.execute(select(settings_table.c.value).where(settings_table.c.key == key).with_for_update())
    ).scalar_one_or_none()
    await session.execute(
        pg_insert(settings_table)
        .values(key=key, value=value, updated_by=actor)
        .on_conflict_do_update(
            index_elements=["key"], set_={"value": value, "updated_by": actor, "updated_at": datetime.now(UTC)}
        )
    )
    await audit(session, actor, "settings.changed", key, {"before": before, "after": value})
    return await load_settings(session)


# --- billing.receivables.v1: keep the read model of what each account owes ---


async def on_account_upserted(session: AsyncSession, envelope: Envelope) -> None:
    account = parse_data(envelope, AccountUpserted)
    values = account.model_dump(exclude={"current_balance"})
    if account.current_balance is not None:
        # Billing's statement already includes everything it knew: count our collections afresh from here.
        values |= {"reported_balance": account.current_balance.amount, "collected_since_report": Decimal(0)}
    await session.execute(
        pg_insert(accounts).values(**values).on_conflict_do_update(index_elements=["account_number"], set_=values)
    )


async def _upsert_receivable(session: AsyncSession, values: dict[str, Any]) -> None:
    # A re-issued item updates its description and dates but never resets what was already paid.
    await session.execute(
        pg_insert(receivables)
        .values(**values)
        .on_conflict_do_update(
            index_elements=["payment_type", "item_reference"],
            set_={k: values[k] for k in ("description", "period_or_date", "issued_on", "due_date")},
        )
    )


async def on_bill_issued(session: AsyncSession, envelope: Envelope) -> None:
    bill = parse_data(envelope, BillIssued)
    await _upsert_receivable(
        session,
        {
            "payment_type": PaymentType.BILL,
            "item_reference": bill.invoice_number,
            "account_number": bill.account_number,
            "description": f"Bill {bill.billing_period}",
            "period_or_date": bill.billing_period,
            "issued_on": bill.issued_on,
            "due_date": bill.due_date,
            "amount": bill.amount.amount,
            "outstanding": bill.amount.amount,
            "currency": bill.amount.currency,
        },
    )


async def on_service_charge_issued(session: AsyncSession, envelope: Envelope) -> None:
    charge = parse_data(envelope, ServiceChargeIssued)
    await _upsert_receivable(
        session,
        {
            "payment_type": PaymentType.SERVICE,
            "item_reference": charge.service_charge_id,
            "account_number": charge.account_number,
            "description": charge.description,
            "period_or_date": charge.service_date.isoformat(),
            "issued_on": charge.service_date,
            "due_date": charge.due_date,
            "amount": charge.amount.amount,
            "outstanding": charge.amount.amount,
            "currency": charge.amount.currency,
        },
    )


async def on_installment_plan_created(session: AsyncSession, envelope: Envelope) -> None:
    plan = parse_data(envelope, InstallmentPlanCreated)
    for installment in plan.installments:
        await _upsert_receivable(
            session,
            {
                "payment_type": PaymentType.INSTALLMENT,
                "item_reference": f"{plan.plan_id}/{installment.number}",
                "account_number": plan.account_number,
                "description": f"Plan {plan.plan_id} installment {installment.number}",
                "period_or_date": installment.due_date.isoformat(),
                "issued_on": plan.created_on,
                "due_date": installment.due_date,
                "amount": installment.amount.amount,
                "outstanding": installment.amount.amount,
                "currency": installment.amount.currency,
            },
        )


BILLING_HANDLERS = {
    "account.upserted": on_account_upserted,
    "bill.issued": on_bill_issued,
    "service_charge.issued": on_service_charge_issued,
    "installment_plan.created": on_installment_plan_created,
}

# --- recording a payment ---


@dataclass(frozen=True)
class RecordPayment:
    account_number: str
    payment_type: PaymentType
    item_reference: str
    channel: str | None
    method: str
    amount: Decimal
    payment_date: date
    cash_received: Decimal | None = None
    notes: str | None = None

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.__dict__, default=str, sort_keys=True).encode()).hexdigest()


async def _next_numbers(session: AsyncSession, config: domain.PaymentSettings, year: int) -> dict[str, str]:
    """Payment id, transaction id and receipt number in the configured formats, in one round trip.

    Sequence values never repeat, so two payments never draw the same number. Only a format edited back onto
    numbers issued under an older format could meet an old one; those are skipped.
    """
    draw = select(*(SEQUENCES[kind].next_value().label(kind) for kind in domain.NUMBER_KINDS))
    values = (await session.execute(draw)).one()._mapping
    numbers = {kind: config.format_for(kind).render(int(values[kind]), year) for kind in domain.NUMBER_KINDS}
    taken = select(payments.c.payment_id).where(
        (payments.c.payment_id == numbers["payment_id"])
        | (payments.c.transaction_id == numbers["transaction_id"])
        | (payments.c.receipt_number == numbers["receipt_number"])
    )
    if (await session.execute(taken.limit(1))).first() is None:
        return numbers
    return await _next_numbers(session, config, year)


async def _account(session: AsyncSession, account_number: str) -> Row[Any]:
    account = (await session.execute(select(accounts).where(accounts.c.account_number == account_number))).first()
    if account is None:
        raise NotFound("unknown_account", f"no consumer with account {account_number}", field="account_number")
    return account


async def _locked_item(session: AsyncSession, account_number: str, payment_type: str, reference: str) -> Row[Any]:
    # Row lock: concurrent payments for one item allocate one after another, never beyond what is owed.
    item = (
        await session.execute(
            select(receivables)
            .where(
                receivables.c.payment_type == payment_type,
                receivables.c.item_reference == reference,
                receivables.c.account_number == account_number,
            )
            .with_for_update()
        )
    ).first()
    if item is None:
        raise NotFound("unknown_item", f"no {payment_type} {reference} on this account", field="item_reference")
    return item


def _consumer(account: Row[Any]) -> ConsumerSnapshot:
    return ConsumerSnapshot(
        account_number=account.account_number,
        name=account.name,
        service_address=account.service_address,
        phone=account.phone,
        email=account.email,
    )


async def _allocate(session: AsyncSession, account_number: str, item: Row[Any], applied: Decimal) -> None:
    """Take `applied` off the item and the account; negative gives it back (cancellation, refund)."""
    await session.execute(
        update(receivables)
        .where(receivables.c.payment_type == item.payment_type, receivables.c.item_reference == item.item_reference)
        .values(outstanding=receivables.c.outstanding - applied)
    )
    await session.execute(
        update(accounts)
        .where(accounts.c.account_number == account_number)
        .values(collected_since_report=accounts.c.collected_since_report + applied)
    )


async def _announce_posting(session: AsyncSession, payment: Row[Any], account: Row[Any], item: Row[Any]) -> None:
    """`payment.posted`, and `payment.overpaid` when more came in than was due."""
    currency = payment.currency
    consumer = _consumer(account)

    def money(amount: Decimal) -> Money:
        return Money(amount=amount, currency=currency)

    analysis = domain.Analysis(due=payment.due, paid=payment.amount)
    posted = PaymentPosted(
        payment_id=payment.payment_id,
        transaction_id=payment.transaction_id,
        receipt_number=payment.receipt_number,
        consumer=consumer,
        item=ItemSnapshot(
            payment_type=payment.payment_type,
            item_reference=payment.item_reference,
            description=item.description,
            period_or_date=item.period_or_date,
            issued_on=item.issued_on,
            due=money(payment.due),
        ),
        channel=payment.channel,
        method=payment.method,
        amount=money(payment.amount),
        payment_date=payment.payment_date,
        posted_at=payment.posted_at,
        received_by=payment.received_by,
        status=payment.status,
        verification=payment.verification,
        difference=money(analysis.difference),
        outcome=analysis.outcome,
        cash_received=money(payment.cash_received) if payment.cash_received is not None else None,
        change_given=money(payment.change_given) if payment.change_given is not None else None,
        notes=payment.notes,
    )
    await emit(session, "payment.posted", payment.account_number, posted)
    if analysis.outcome is domain.Outcome.OVER:
        overpaid = PaymentOverpaid(
            payment_id=payment.payment_id,
            receipt_number=payment.receipt_number,
            consumer=consumer,
            payment_amount=money(payment.amount),
            overpaid=money(analysis.overpaid),
            posted_at=payment.posted_at,
        )
        await emit(session, "payment.overpaid", payment.account_number, overpaid)


async def _payment_row(session: AsyncSession, payment_id: str, *, lock: bool = False) -> Row[Any]:
    query = select(payments).where(payments.c.payment_id == payment_id)
    return (await session.execute(query.with_for_update() if lock else query)).one()


async def record_payment(
    session: AsyncSession, command: RecordPayment, *, received_by: str, idempotency_key: str
) -> str:
    """Post a payment exactly once for `idempotency_key`; returns its payment id."""
    fingerprint = command.fingerprint()
    claimed = (
        await session.execute(
            pg_insert(idempotency_keys)
            .values(key=idempotency_key, request_hash=fingerprint)
            .on_conflict_do_nothing()
            .returning(idempotency_keys.c.key)
        )
    ).first()
    if claimed is None:
        earlier = (
            await session.execute(select(idempotency_keys).where(idempotency_keys.c.key == idempotency_key))
        ).one()
        if earlier.request_hash != fingerprint:
            raise Conflict("idempotency_key_reused", "this Idempotency-Key was used with a different request")
        return str(earlier.payment_id)

    config = await load_settings(session)
    channel = command.channel or config.default_channel
    config.check(channel=channel, method=command.method)
    account = await _account(session, command.account_number)
    item = await _locked_item(session, command.account_number, command.payment_type, command.item_reference)
    amount = quantize(command.amount, item.currency)
    allocation = domain.allocate(item.outstanding, amount, config.overpayment_threshold)
    change = domain.change_given(amount, command.cash_received)
    analysis = domain.Analysis(due=item.outstanding, paid=amount)

    now = datetime.now(UTC)
    year = command.payment_date.year
    numbers = await _next_numbers(session, config, year)
    payment_id = numbers["payment_id"]
    await _allocate(session, command.account_number, item, allocation.applied)
    payment = (
        await session.execute(
            payments.insert()
            .values(
                **numbers,
                account_number=command.account_number,
                consumer_name=account.name,
                payment_type=command.payment_type,
                item_reference=command.item_reference,
                channel=channel,
                method=command.method,
                amount=amount,
                currency=item.currency,
                payment_date=command.payment_date,
                status=Status.POSTED,
                verification=Verification.VERIFIED,
                received_by=received_by,
                due=analysis.due,
                applied=allocation.applied,
                outcome=analysis.outcome,
                cash_received=command.cash_received,
                change_given=change,
                notes=command.notes,
                recorded_at=now,
                posted_at=now,
            )
            .returning(payments)
        )
    ).one()
    await session.execute(
        update(idempotency_keys).where(idempotency_keys.c.key == idempotency_key).values(payment_id=payment_id)
    )
    await audit(
        session,
        received_by,
        "payment.posted",
        payment_id,
        {"amount": str(amount), "item": command.item_reference, "receipt_number": payment.receipt_number},
    )
    await _announce_posting(session, payment, account, item)
    await track(
        session,
        "payment_processed",
        received_by,
        command.account_number,
        payment_type=command.payment_type,
        method=command.method,
        channel=channel,
    )
    return payment_id


# --- payments.commands.v1: the same command from other enterprise systems ---


async def on_payment_record_requested(session: AsyncSession, envelope: Envelope) -> None:
    request = parse_data(envelope, PaymentRecordRequested)
    command = RecordPayment(**request.model_dump(exclude={"currency"}))
    await record_payment(session, command, received_by=envelope.source, idempotency_key=f"command:{envelope.id}")


async def on_command_rejected(session: AsyncSession, envelope: Envelope, reason: str) -> None:
    """Tell the sending system why its command was not recorded (the command itself goes to the DLQ)."""
    rejection = PaymentRecordRejected(command_id=envelope.id, reason=reason, errors=[reason])
    await emit(session, "payment.record_rejected", envelope.subject or "unknown", rejection)


COMMAND_HANDLERS = {"payment.record_requested": on_payment_record_requested}

# --- gateway.events.v1: online payments follow the gateway, forward only ---


async def _online_payment(session: AsyncSession, payment_intent_id: str) -> Row[Any] | None:
    query = select(payments).where(payments.c.payment_intent_id == payment_intent_id).with_for_update()
    return (await session.execute(query)).first()


async def _status_changed(
    session: AsyncSession, payment: Row[Any], previous: str, *, at: datetime, actor: str = SYSTEM
) -> None:
    changed = PaymentStatusChanged(
        payment_id=payment.payment_id,
        receipt_number=payment.receipt_number,
        account_number=payment.account_number,
        previous_status=previous,
        status=payment.status,
        webhook_status=payment.webhook_status,
        settlement_status=payment.settlement_status,
        changed_at=at,
    )
    await emit(session, "payment.status_changed", payment.account_number, changed)
    await audit(
        session,
        actor,
        "payment.status_changed",
        payment.payment_id,
        {
            "from": previous,
            "to": payment.status,
            "webhook_status": payment.webhook_status,
            "settlement_status": payment.settlement_status,
        },
    )


async def on_gateway_payment_status_changed(session: AsyncSession, envelope: Envelope) -> None:
    event = parse_data(envelope, GatewayPaymentStatusChanged)
    incoming = domain.online_status(event.gateway_status)
    account = await _account(session, event.account_number)
    item = await _locked_item(session, event.account_number, event.payment_type, event.item_reference)
    payment = await _online_payment(session, event.payment_intent_id)
    created = payment is None
    if payment is None:
        config = await load_settings(session)
        year = event.occurred_at.year
        amount = quantize(event.amount.amount, event.amount.currency)
        numbers = await _next_numbers(session, config, year)
        payment_id = numbers["payment_id"]
        await session.execute(
            payments.insert().values(
                **numbers,
                account_number=event.account_number,
                consumer_name=account.name,
                payment_type=event.payment_type,
                item_reference=event.item_reference,
                channel=ONLINE_CHANNEL,
                method="Credit Card",
                amount=amount,
                currency=event.amount.currency,
                payment_date=event.occurred_at.date(),
                status=Status.PENDING,
                verification=Verification.PENDING,
                received_by=SYSTEM,
                due=item.outstanding,
                applied=Decimal(0),
                outcome=domain.Analysis(due=item.outstanding, paid=amount).outcome,
                # Processing time counts from when the customer started paying, if the gateway says.
                recorded_at=event.initiated_at or event.occurred_at,
                online=True,
                payment_intent_id=event.payment_intent_id,
                gateway_status="created",
                webhook_status="Not Confirmed",
                settlement_status="N/A",
            )
        )
        payment = await _payment_row(session, payment_id, lock=True)
        await audit(session, SYSTEM, "payment.recorded", payment_id, {"payment_intent_id": event.payment_intent_id})
        if incoming is Status.PENDING:
            await _status_changed(session, payment, "", at=event.occurred_at)
            return

    current = Status(payment.status)
    previous = "" if created else current
    if event.gateway_status == "partially_refunded" and not created:
        refunded = event.amount_refunded.amount if event.amount_refunded else None
        await audit(session, SYSTEM, "payment.partially_refunded", payment.payment_id, {"refunded": str(refunded)})
        return
    if not domain.moves_forward(current, incoming):
        # Out of order or after the fact (e.g. failed after succeeded): kept in the audit, changes nothing.
        await audit(
            session,
            SYSTEM,
            "gateway.event_ignored",
            payment.payment_id,
            {"gateway_status": event.gateway_status, "status": current, "gateway_event_id": event.gateway_event_id},
        )
        return

    values: dict[str, Any] = {
        "status": incoming,
        "gateway_status": event.gateway_status,
        "webhook_status": event.webhook_status,
    }
    if incoming is Status.POSTED:
        # Money taken by the gateway cannot be refused: beyond the threshold it becomes credit all the same.
        applied = domain.Analysis(due=item.outstanding, paid=payment.amount)
        values |= {
            "posted_at": event.occurred_at,
            "due": item.outstanding,
            "applied": min(payment.amount, item.outstanding),
            "outcome": applied.outcome,
        }
        if domain.settlement_moves_forward(payment.settlement_status, event.settlement_status):
            values["settlement_status"] = event.settlement_status
        await _allocate(session, payment.account_number, item, min(payment.amount, item.outstanding))
    elif incoming is Status.REFUNDED and domain.counts_as_collected(current):
        await _allocate(session, payment.account_number, item, -payment.applied)
    await session.execute(update(payments).where(payments.c.payment_id == payment.payment_id).values(**values))
    updated = await _payment_row(session, payment.payment_id)
    if incoming is Status.POSTED:
        await audit(session, SYSTEM, "payment.posted", payment.payment_id, {"amount": str(payment.amount)})
        await _announce_posting(session, updated, account, item)
    else:
        await _status_changed(session, updated, previous, at=event.occurred_at)


async def on_gateway_settlement_status_changed(session: AsyncSession, envelope: Envelope) -> None:
    event = parse_data(envelope, GatewaySettlementStatusChanged)
    payment = await _online_payment(session, event.payment_intent_id)
    if payment is None:
        raise NotFound(
            "unknown_payment_intent", f"no payment for intent {event.payment_intent_id}", field="payment_intent_id"
        )
    if not domain.settlement_moves_forward(payment.settlement_status, event.settlement_status):
        await audit(
            session,
            SYSTEM,
            "gateway.event_ignored",
            payment.payment_id,
            {"settlement_status": event.settlement_status, "current": payment.settlement_status},
        )
        return
    values: dict[str, Any] = {"settlement_status": event.settlement_status}
    if event.webhook_status is not None:
        values["webhook_status"] = event.webhook_status
    if event.settlement_status == "Success":
        values["settled_at"] = event.occurred_at
    await session.execute(update(payments).where(payments.c.payment_id == payment.payment_id).values(**values))
    await _status_changed(
        session, await _payment_row(session, payment.payment_id), payment.status, at=event.occurred_at
    )


GATEWAY_HANDLERS = {
    "gateway.payment_status_changed": on_gateway_payment_status_changed,
    "gateway.settlement_status_changed": on_gateway_settlement_status_changed,
}

# --- creditnotes.events.v1 ---


async def on_credit_note_issued(session: AsyncSession, envelope: Envelope) -> None:
    note = parse_data(envelope, CreditNoteIssued)
    # The detail view shows the first credit note a payment generated.
    await session.execute(
        update(payments)
        .where(payments.c.receipt_number == note.receipt_number, payments.c.credit_note_number.is_(None))
        .values(credit_note_number=note.credit_note_number, credit_note_amount=note.amount.amount)
    )


async def on_credit_note_applied(session: AsyncSession, envelope: Envelope) -> None:
    applied = parse_data(envelope, CreditNoteApplied)
    item = await _locked_item(session, applied.account_number, applied.payment_type, applied.item_reference)
    # Credit notes checked the item was open; never let the read model go below zero if it raced a payment.
    amount = min(applied.applied.amount, item.outstanding)
    await _allocate(session, applied.account_number, item, amount)
    await audit(
        session,
        applied.applied_by,
        "credit_note.applied",
        applied.item_reference,
        {"credit_note_number": applied.credit_note_number, "applied": str(amount)},
    )


CREDIT_NOTE_HANDLERS = {"credit_note.issued": on_credit_note_issued, "credit_note.applied": on_credit_note_applied}

# --- staff actions on a posted payment ---


async def _find_for_update(session: AsyncSession, payment_id_or_receipt: str) -> Row[Any]:
    row = (
        await session.execute(
            select(payments)
            .where(
                (payments.c.payment_id == payment_id_or_receipt) | (payments.c.receipt_number == payment_id_or_receipt)
            )
            .with_for_update()
        )
    ).first()
    if row is None:
        raise NotFound("payment_not_found", f"no payment {payment_id_or_receipt}")
    return row


async def verify_payment(session: AsyncSession, payment_id_or_receipt: str, *, verified_by: str) -> str:
    payment = await _find_for_update(session, payment_id_or_receipt)
    domain.check_verifiable(payment.online, payment.verification, payment.status)
    now = datetime.now(UTC)
    await session.execute(
        update(payments)
        .where(payments.c.payment_id == payment.payment_id)
        .values(verification=Verification.VERIFIED, verified_by=verified_by, verified_at=now)
    )
    await audit(session, verified_by, "payment.verified", payment.payment_id, {})
    verified = PaymentVerified(
        payment_id=payment.payment_id,
        receipt_number=payment.receipt_number,
        account_number=payment.account_number,
        verified_by=verified_by,
        verified_at=now,
    )
    await emit(session, "payment.verified", payment.account_number, verified)
    return str(payment.payment_id)


async def cancel_payment(session: AsyncSession, payment_id_or_receipt: str, *, reason: str, cancelled_by: str) -> str:
    """Admin only: reverse the allocation and take the payment out of what was collected."""
    payment = await _find_for_update(session, payment_id_or_receipt)
    domain.check_cancellable(payment.status, reason)
    item = await _locked_item(session, payment.account_number, payment.payment_type, payment.item_reference)
    if payment.status == Status.POSTED:
        await _allocate(session, payment.account_number, item, -payment.applied)
    now = datetime.now(UTC)
    await session.execute(
        update(payments)
        .where(payments.c.payment_id == payment.payment_id)
        .values(status=Status.CANCELLED, cancelled_by=cancelled_by, cancelled_at=now, cancel_reason=reason)
    )
    await audit(
        session,
        cancelled_by,
        "payment.cancelled",
        payment.payment_id,
        {"reason": reason, "previous_status": payment.status, "reversed": str(payment.applied)},
    )
    cancelled = PaymentCancelled(
        payment_id=payment.payment_id,
        receipt_number=payment.receipt_number,
        account_number=payment.account_number,
        amount=Money(amount=payment.amount, currency=payment.currency),
        reason=reason,
        cancelled_by=cancelled_by,
        cancelled_at=now,
    )
    await emit(session, "payment.cancelled", payment.account_number, cancelled)
    return str(payment.payment_id)


def reject_reason(exc: Rejected) -> str:
    return f"{exc.field}: {exc.detail}" if exc.field else exc.detail
