"""Gateway bridge commands: record a verified Stripe webhook once and stage the normalized events.

Each function runs inside the caller's transaction; events are staged in the outbox so the webhook inbox row,
the payment intent's state and the events commit together.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.gateway_bridge import domain
from services.gateway_bridge.storage import payment_intents, payout_jobs, webhook_events
from shared.contracts import Envelope, Topic, dlq
from shared.contracts.events import (
    Contract,
    GatewayPaymentStatusChanged,
    GatewayPayoutStatusChanged,
    Money,
    PaymentType,
)
from shared.messaging import DLQ_REASON_HEADER
from shared.money import quantize
from shared.outbox import stage

log = logging.getLogger(__name__)

SOURCE = "gateway_bridge"
# The `x-dlq-consumer` header of a dead letter names where it was refused: the webhook intake, not a Kafka group.
DLQ_ORIGIN = "paydesk.gateway_bridge.webhooks"
# Envelope ids derived from Stripe's event id: the same Stripe event always yields the same envelope id.
ENVELOPE_NAMESPACE = uuid.UUID("6f1c1d1e-3b1a-4c55-9f0e-7a2f1b9e0c42")

IGNORED = Counter("paydesk_gateway_webhooks_ignored_total", "Verified Stripe events of types we do not handle")

# The webhook's statements are built once: a webhook is on Stripe's clock, and building and cache-keying
# SQLAlchemy constructs per request costs more than the database round trips.
_CLAIM = (
    pg_insert(webhook_events).on_conflict_do_nothing(index_elements=["event_id"]).returning(webhook_events.c.event_id)
)
_RECORD_OUTCOME = update(webhook_events).where(webhook_events.c.event_id == bindparam("claimed_event_id"))
_intent_insert = pg_insert(payment_intents)
# Created on first sight, otherwise locked: a no-op DO UPDATE takes the row lock and returns the row in one trip.
_UPSERT_AND_LOCK_INTENT = _intent_insert.on_conflict_do_update(
    index_elements=["payment_intent_id"], set_={"payment_intent_id": _intent_insert.excluded.payment_intent_id}
).returning(*payment_intents.c)
_UPDATE_INTENT = update(payment_intents).where(payment_intents.c.payment_intent_id == bindparam("locked_intent_id"))


def gateway_envelope(event_type: str, subject: str, data: Contract, *, key: str) -> Envelope:
    return Envelope(
        id=uuid.uuid5(ENVELOPE_NAMESPACE, key),
        type=event_type,
        time=datetime.now(UTC),
        source=SOURCE,
        subject=subject,
        data=data.model_dump(mode="json"),
    )


async def dead_letter(session: AsyncSession, event: dict[str, Any], reason: str, *, subject: str, key: str) -> None:
    """Stage a trimmed copy of the Stripe event on `gateway.events.v1.dlq` with the reason in a header.

    The copy carries ids and metadata only (never payment method details); the full raw body stays in our
    webhook inbox, where an operator finds it by the event id.
    """
    reason = domain.mask_card_numbers(reason)[0]
    obj = (event.get("data") or {}).get("object") if isinstance(event.get("data"), dict) else None
    trimmed = {
        "id": event.get("id"),
        "type": event.get("type"),
        "created": event.get("created"),
        "livemode": event.get("livemode"),
        "object": {k: obj.get(k) for k in ("id", "object", "metadata", "payment_intent", "charge")}
        if isinstance(obj, dict)
        else None,
        "reason": reason,
    }
    envelope = Envelope(
        id=uuid.uuid5(ENVELOPE_NAMESPACE, f"dlq/{key}"),
        type="stripe.event",
        time=datetime.now(UTC),
        source=SOURCE,
        subject=subject[:200] or "unknown",
        data=trimmed,
    )
    await stage(
        session,
        dlq(Topic.GATEWAY_EVENTS),
        envelope,
        extra_headers={DLQ_REASON_HEADER: reason[:2000], "x-dlq-consumer": DLQ_ORIGIN},
        value=domain.mask_card_numbers(envelope.to_bytes().decode())[0].encode(),
    )
    log.warning("stripe event dead-lettered", extra={"stripe_event_id": event.get("id"), "reason": reason})


# --- the webhook ---


@dataclass(frozen=True)
class PaymentChange:
    """One payment status a verified Stripe event reports, already tied to an account and item."""

    payment_intent_id: str
    route: domain.PaymentRoute
    amount: domain.Amount
    gateway_status: str
    occurred_at: datetime
    initiated_at: datetime | None
    amount_refunded: domain.Amount | None = None
    dispute_id: str | None = None
    dispute_reason: str | None = None


async def receive_webhook(session: AsyncSession, body: bytes, event: dict[str, Any]) -> str:
    """Record a verified Stripe event once and stage what it means; returns the outcome.

    Outcomes: `duplicate` (seen before; nothing changes), `published`, `superseded` (published for the audit
    trail, status unchanged), `ignored`, `dead_lettered`, `payout_pending` (the settlement worker resolves it).
    """
    event_id, event_type = str(event["id"]), str(event["type"])
    kind = domain.event_kind(event_type, event)
    # Work out what the event means before claiming it, so the claim records the outcome in one write; only a
    # superseded status (known once the intent is locked) needs a second one.
    change: PaymentChange | None = None
    payout: PayoutSeen | None = None
    outgoing: GatewayPayoutStatusChanged | None = None
    outcome = {"payment": "published", "charge": "published", "outgoing": "published", "payout": "payout_pending"}.get(
        kind, "ignored"
    )
    detail: str | None = None
    try:
        if kind == "payment":
            change = _payment_change(event)
        elif kind == "charge":
            change = await _charge_change(session, event)
        elif kind == "payout":
            payout = _payout(event)
        elif kind == "outgoing":
            outgoing = _outgoing(event)
    except domain.Unroutable as exc:
        outcome, detail = "dead_lettered", str(exc)
    obj = _object(event) or {}
    intent_id = (
        change.payment_intent_id if change else domain.object_id(obj.get("payment_intent") or obj.get("id"), "pi_")
    )

    text, masked = domain.mask_card_numbers(body.decode("utf-8"))
    created = event.get("created")
    claimed = (
        await session.execute(
            _CLAIM,
            {
                "event_id": event_id,
                "event_type": event_type,
                "livemode": event.get("livemode") is True,
                "stripe_created_at": domain.stripe_time(created) if _is_unix_time(created) else None,
                "raw_body": text.encode() if masked else body,
                "body_masked": masked > 0,
                "outcome": outcome,
                "detail": detail,
                "payment_intent_id": intent_id,
            },
        )
    ).first()
    if claimed is None:
        return "duplicate"

    if outcome == "ignored":
        IGNORED.inc()
    elif outcome == "dead_lettered":
        metadata = obj.get("metadata")
        account = metadata.get("account_number") if isinstance(metadata, dict) else None
        subject = account if isinstance(account, str) and account.strip() else (intent_id or event_id)
        await dead_letter(session, event, detail or "", subject=subject, key=event_id)
    elif payout is not None:
        await _queue_payout(session, event, payout)
    elif outgoing is not None:
        # Keyed by our payout when we created the object, so one payee payout's events stay in order.
        subject = outgoing.paydesk_payout_id or outgoing.object_id
        await stage(
            session,
            Topic.GATEWAY_EVENTS,
            gateway_envelope("gateway.payout_status_changed", subject, outgoing, key=event_id),
        )
    elif change is not None:
        outcome = await apply_payment_change(session, event_id, change)
        if outcome == "superseded":
            await session.execute(_RECORD_OUTCOME, {"claimed_event_id": event_id, "outcome": outcome})
    return outcome


def _is_unix_time(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 253402300800


def _object(event: dict[str, Any]) -> dict[str, Any] | None:
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    return obj if isinstance(obj, dict) else None


def _payment_change(event: dict[str, Any]) -> PaymentChange:
    intent = _object(event)
    if intent is None:
        raise domain.Unroutable("data.object missing")
    intent_id = domain.object_id(intent.get("id"), "pi_")
    if intent_id is None:
        raise domain.Unroutable("data.object.id is not a payment intent id")
    route = domain.route_from_metadata(intent.get("metadata"))
    gateway_status = domain.PAYMENT_INTENT_EVENTS[str(event["type"])]
    # What actually arrived once it succeeded; the intended amount before that.
    received = intent.get("amount_received")
    minor = received if gateway_status == "succeeded" and isinstance(received, int) and received > 0 else None
    return PaymentChange(
        payment_intent_id=intent_id,
        route=route,
        amount=domain.from_minor_units(minor if minor is not None else intent.get("amount"), intent.get("currency")),
        gateway_status=gateway_status,
        occurred_at=domain.stripe_time(event.get("created")),
        initiated_at=domain.stripe_time(intent["created"]) if _is_unix_time(intent.get("created")) else None,
    )


async def _charge_change(session: AsyncSession, event: dict[str, Any]) -> PaymentChange:
    """A refund (data.object is a Charge) or a dispute (a Dispute); routed by metadata or the known intent."""
    obj = _object(event)
    if obj is None:
        raise domain.Unroutable("data.object missing")
    intent_id = domain.object_id(obj.get("payment_intent"), "pi_")
    if intent_id is None:
        raise domain.Unroutable("data.object.payment_intent missing")
    event_type = str(event["type"])
    gateway_status = domain.charge_status(event_type, obj)
    occurred_at = domain.stripe_time(event.get("created"))
    refunded = None
    if event_type == "charge.refunded" and obj.get("amount_refunded") is not None:
        refunded = domain.from_minor_units(obj.get("amount_refunded"), obj.get("currency"))
    dispute_id = domain.object_id(obj.get("id"), "dp_") if event_type.startswith("charge.dispute.") else None
    reason = obj.get("reason") if dispute_id and isinstance(obj.get("reason"), str) else None
    metadata = obj.get("metadata")
    if domain.has_route(metadata):
        return PaymentChange(
            intent_id,
            domain.route_from_metadata(metadata),
            domain.from_minor_units(obj.get("amount"), obj.get("currency")),
            gateway_status,
            occurred_at,
            None,
            refunded,
            dispute_id,
            reason,
        )
    known = (
        await session.execute(select(payment_intents).where(payment_intents.c.payment_intent_id == intent_id))
    ).first()
    if known is None:
        raise domain.Unroutable(
            f"metadata.account_number missing and payment intent {intent_id} is unknown (no earlier "
            "payment_intent event carried its metadata)"
        )
    route = domain.PaymentRoute(known.account_number, PaymentType(known.payment_type), known.item_reference)
    amount = domain.Amount(quantize(known.amount, known.currency), known.currency)
    return PaymentChange(
        intent_id, route, amount, gateway_status, occurred_at, known.initiated_at, refunded, dispute_id, reason
    )


async def _lock_intent(session: AsyncSession, change: PaymentChange) -> Any:
    """The intent's row, created on first sight and locked so its events are ordered like its state."""
    view = domain.current_view(None, None)
    return (
        await session.execute(
            _UPSERT_AND_LOCK_INTENT,
            {
                "payment_intent_id": change.payment_intent_id,
                "account_number": change.route.account_number,
                "payment_type": change.route.payment_type.value,
                "item_reference": change.route.item_reference,
                "amount": change.amount.value,
                "currency": change.amount.currency,
                "initiated_at": change.initiated_at,
                "webhook_status": view.webhook_status,
                "settlement_status": view.settlement_status,
            },
        )
    ).one()


async def apply_payment_change(session: AsyncSession, event_id: str, change: PaymentChange) -> str:
    """Move the intent's status forward (or not) and stage `gateway.payment_status_changed`."""
    row = await _lock_intent(session, change)
    forward = domain.moves_forward(row.gateway_status, change.gateway_status, domain.PAYMENT_RANK)
    status = domain.later(row.gateway_status, change.gateway_status, domain.PAYMENT_RANK)
    view = domain.current_view(status, row.payout_status)
    values: dict[str, Any] = {
        "gateway_status": status,
        "webhook_status": view.webhook_status,
        "settlement_status": view.settlement_status,
        "events_applied": row.events_applied + 1,
        "updated_at": datetime.now(UTC),
    }
    if row.initiated_at is None and change.initiated_at is not None:
        values["initiated_at"] = change.initiated_at
    if forward and change.gateway_status == "succeeded":
        values.update(amount=change.amount.value, currency=change.amount.currency)
    await session.execute(_UPDATE_INTENT, {"locked_intent_id": change.payment_intent_id, **values})
    event_view = domain.payment_view(change.gateway_status)
    data = GatewayPaymentStatusChanged(
        gateway_event_id=event_id,
        payment_intent_id=change.payment_intent_id,
        account_number=change.route.account_number,
        payment_type=change.route.payment_type,
        item_reference=change.route.item_reference,
        amount=Money(amount=change.amount.value, currency=change.amount.currency),
        gateway_status=change.gateway_status,
        webhook_status=event_view.webhook_status,
        settlement_status=event_view.settlement_status,
        occurred_at=change.occurred_at,
        superseded=not forward,
        initiated_at=values.get("initiated_at", row.initiated_at),
        amount_refunded=Money(amount=change.amount_refunded.value, currency=change.amount_refunded.currency)
        if change.amount_refunded
        else None,
        dispute_id=change.dispute_id,
        dispute_reason=change.dispute_reason,
    )
    await stage(
        session,
        Topic.GATEWAY_EVENTS,
        gateway_envelope("gateway.payment_status_changed", change.route.account_number, data, key=event_id),
    )
    return "published" if forward else "superseded"


@dataclass(frozen=True)
class PayoutSeen:
    """A payout of the utility's own balance as its webhook describes it."""

    payout_id: str
    occurred_at: datetime
    amount: domain.Amount | None
    arrival_date: date | None
    stripe_status: str | None


def _payout(event: dict[str, Any]) -> PayoutSeen:
    payout = _object(event)
    payout_id = domain.object_id(payout.get("id"), "po_") if payout else None
    if payout is None or payout_id is None:
        raise domain.Unroutable("data.object.id is not a payout id")
    # Only `gateway.payout_listed` needs these; a payout without them is still settled, just not listed.
    try:
        amount: domain.Amount | None = domain.from_minor_units(payout.get("amount"), payout.get("currency"))
    except domain.Unroutable:
        amount = None
    arrival = payout.get("arrival_date")
    status = payout.get("status")
    return PayoutSeen(
        payout_id,
        domain.stripe_time(event.get("created")),
        amount,
        domain.stripe_time(arrival).date() if _is_unix_time(arrival) else None,
        status[:30] if isinstance(status, str) else None,
    )


async def _queue_payout(session: AsyncSession, event: dict[str, Any], payout: PayoutSeen) -> None:
    await session.execute(
        payout_jobs.insert().values(
            event_id=str(event["id"]),
            payout_id=payout.payout_id,
            payout_status=domain.PAYOUT_EVENTS[str(event["type"])],
            occurred_at=payout.occurred_at,
            amount=payout.amount.value if payout.amount else None,
            currency=payout.amount.currency if payout.amount else None,
            arrival_date=payout.arrival_date,
            stripe_status=payout.stripe_status,
        )
    )


def _outgoing(event: dict[str, Any]) -> GatewayPayoutStatusChanged:
    """A transfer to a connected account, or a connected account's (or our own) payee payout, normalised."""
    obj = _object(event)
    event_type = str(event["type"])
    object_type = event_type.split(".", 1)[0]
    prefix = {"transfer": "tr_", "payout": "po_"}[object_type]
    object_id = domain.object_id(obj.get("id"), prefix) if obj else None
    if obj is None or object_id is None:
        raise domain.Unroutable(f"data.object.id is not a {object_type} id")
    metadata = obj.get("metadata")
    ours = metadata.get("paydesk_payout_id") if isinstance(metadata, dict) else None
    # A transfer names the account it pays; a connected account's payout arrives as a Connect event.
    account = event.get("account") if object_type == "payout" else obj.get("destination")
    connected = domain.object_id(account, "acct_")
    try:
        amount: domain.Amount | None = domain.from_minor_units(obj.get("amount"), obj.get("currency"))
    except domain.Unroutable:
        amount = None
    failure_code, failure_message = obj.get("failure_code"), obj.get("failure_message")
    return GatewayPayoutStatusChanged(
        gateway_event_id=str(event["id"]),
        event_type=event_type,
        object_type=object_type,
        object_id=object_id,
        connected_account=connected or (account if isinstance(account, str) and account else None),
        paydesk_payout_id=ours.strip()[:255] if isinstance(ours, str) and ours.strip() else None,
        amount=Money(amount=amount.value, currency=amount.currency) if amount else None,
        failure_code=failure_code if isinstance(failure_code, str) else None,
        failure_message=failure_message if isinstance(failure_message, str) else None,
        fully_reversed=obj.get("reversed") is True if object_type == "transfer" else None,
        occurred_at=domain.stripe_time(event.get("created")),
    )
