"""Pure rules of the gateway bridge: how Stripe's words map to ours, and in which order statuses may move.

No I/O here. Handlers read a Stripe event (already verified and parsed into a dict), ask these functions what
it means, and store and publish the answer.

Stripe does not deliver events in order, so every status has a rank and a payment intent's status only ever
moves to a higher rank. The ranks follow a payment's life: it is processing, may fail (and be retried), succeeds,
and afterwards may be partially refunded, disputed or refunded. A late lower-ranked event is still recorded and
published for the audit trail, marked `superseded`, but it never moves the status back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from shared.contracts.events import PaymentType

# Card-number masking moved to shared (the DLQ tools use it too); re-exported for the handlers.
from shared.masking import mask_card_numbers as mask_card_numbers
from shared.money import minor_units, quantize

NOT_APPLICABLE = "N/A"


@dataclass(frozen=True)
class StatusView:
    """What our screens show for a gateway status: the webhook status and the settlement status."""

    webhook_status: str
    settlement_status: str


# The seed's "Stripe status -> our webhook status / our settlement status" table, plus the two charge events
# payments records (refund, dispute): refunded or disputed money is not going to be settled.
PAYMENT_STATUSES: dict[str, StatusView] = {
    "processing": StatusView("Not Confirmed", NOT_APPLICABLE),
    "failed": StatusView("Failed", NOT_APPLICABLE),
    "succeeded": StatusView("In Settlement", "In Progress"),
    "partially_refunded": StatusView("Partially Refunded", NOT_APPLICABLE),
    "disputed": StatusView("Disputed", NOT_APPLICABLE),
    "dispute_under_review": StatusView("Dispute Under Review", NOT_APPLICABLE),
    "dispute_won": StatusView("Dispute Won", NOT_APPLICABLE),
    "dispute_lost": StatusView("Dispute Lost", NOT_APPLICABLE),
    "refunded": StatusView("Refunded", NOT_APPLICABLE),
}

# Forward-only order of a payment intent's status (higher wins). A retried payment goes failed -> succeeded,
# so "failed" ranks below "succeeded"; a late "processing" is below both.
PAYMENT_RANK: dict[str, int] = {
    "processing": 1,
    "failed": 2,
    "succeeded": 3,
    "partially_refunded": 4,
    "disputed": 5,
    "dispute_under_review": 6,
    # A dispute ends once; were both ever reported, the loss stands (the money is gone), in any arrival order.
    "dispute_won": 7,
    "dispute_lost": 8,
    "refunded": 9,
}

# The seed's settlement table: payout created / paid / failed. `None` keeps the previous webhook status.
SETTLEMENT_WEBHOOK_STATUS: dict[str, str | None] = {"created": "In Settlement", "paid": "Settled", "failed": None}
SETTLEMENT_STATUS: dict[str, str] = {"created": "In Progress", "paid": "Success", "failed": "Failed"}
# A payout can be reported paid and fail days later (the bank returns it), so "failed" ranks last.
PAYOUT_RANK: dict[str, int] = {"created": 1, "paid": 2, "failed": 3}

PAYMENT_INTENT_EVENTS: dict[str, str] = {
    "payment_intent.processing": "processing",
    "payment_intent.payment_failed": "failed",
    "payment_intent.succeeded": "succeeded",
}
CHARGE_EVENTS = frozenset(
    {"charge.refunded", "charge.dispute.created", "charge.dispute.updated", "charge.dispute.closed"}
)
# Stripe's dispute statuses -> ours. `warning_closed`: an inquiry closed without a chargeback, so the utility keeps
# the money, as when it wins. `needs_response` (and its warning twin) is where a dispute starts: still just disputed.
DISPUTE_STATUSES: dict[str, str] = {
    "warning_needs_response": "disputed",
    "needs_response": "disputed",
    "warning_under_review": "dispute_under_review",
    "under_review": "dispute_under_review",
    "won": "dispute_won",
    "warning_closed": "dispute_won",
    "lost": "dispute_lost",
}
PAYOUT_EVENTS: dict[str, str] = {"payout.created": "created", "payout.paid": "paid", "payout.failed": "failed"}

# Stripe events about money going OUT to connected accounts (payees paid by the payouts service), published as
# `gateway.payout_status_changed`. `payout.*` is shared with the utility's own payouts of incoming payments (the
# settlement above): see `is_outgoing`.
OUTGOING_EVENTS = frozenset(
    {"transfer.created", "transfer.reversed", "payout.paid", "payout.failed", "payout.canceled"}
)

METADATA_FIELDS = ("account_number", "payment_type", "item_reference")


class Unroutable(ValueError):
    """A verified Stripe event we cannot tie to an account and item; the text names what is missing."""


def is_outgoing(event: dict[str, Any]) -> bool:
    """True if a Stripe event is about money we send out (a payee's transfer or a connected account's payout).

    A transfer always moves the platform's money to a connected account, so every `transfer.*` is outgoing. A
    `payout.*` is outgoing when it is a Connect event (`event.account` names the connected account whose balance
    is paid out) or when we created it (`metadata.paydesk_payout_id`); otherwise it is the utility's own payout
    of collected payments and goes to settlement, as before. Never both: a connected account's payout cannot be
    listed with the platform's key, and settling it would only dead-letter.
    """
    event_type = str(event.get("type"))
    if event_type.startswith("transfer."):
        return True
    if not event_type.startswith("payout."):
        return False
    if isinstance(event.get("account"), str) and event["account"]:
        return True
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    return isinstance(metadata, dict) and bool(metadata.get("paydesk_payout_id"))


def event_kind(event_type: str, event: dict[str, Any] | None = None) -> str:
    """`payment`, `charge`, `payout`, `outgoing` or `ignored`: what the bridge does with a Stripe event.

    Without the event itself, a `payout.*` type is taken to be the utility's own payout (settlement)."""
    if event is not None and is_outgoing(event):
        # Outgoing types we do not report (a connected account's `payout.created`, `transfer.updated`) are ignored.
        return "outgoing" if event_type in OUTGOING_EVENTS else "ignored"
    if event_type in PAYMENT_INTENT_EVENTS:
        return "payment"
    if event_type in CHARGE_EVENTS:
        return "charge"
    if event_type in PAYOUT_EVENTS:
        return "payout"
    return "ignored"


def payment_view(gateway_status: str) -> StatusView:
    """The seed's mapping of one gateway status to our webhook and settlement status."""
    return PAYMENT_STATUSES[gateway_status]


def moves_forward(current: str | None, incoming: str, rank: dict[str, int]) -> bool:
    """True if `incoming` may replace `current` (nothing yet, or a strictly later status)."""
    return current is None or rank[incoming] > rank[current]


def later(current: str | None, incoming: str, rank: dict[str, int]) -> str:
    """The status after applying `incoming` to `current` under the forward-only rule."""
    return incoming if moves_forward(current, incoming, rank) else current  # type: ignore[return-value]


def current_view(payment_status: str | None, payout_status: str | None) -> StatusView:
    """What a payment shows now, from its latest payment status and latest payout status.

    A refund, dispute or failure speaks louder than a payout; a failed payout keeps the webhook status the
    payment had and only marks the settlement failed (the seed: "keep the previous status itself").
    """
    if payment_status is not None and payment_status != "succeeded":
        return payment_view(payment_status)
    if payout_status is None:
        return payment_view("succeeded") if payment_status else StatusView("Not Confirmed", NOT_APPLICABLE)
    webhook = SETTLEMENT_WEBHOOK_STATUS[payout_status] or payment_view("succeeded").webhook_status
    return StatusView(webhook, SETTLEMENT_STATUS[payout_status])


# --- reading Stripe objects (dicts from the verified JSON body) ---


@dataclass(frozen=True)
class PaymentRoute:
    """Which account and item a payment intent pays, from its metadata."""

    account_number: str
    payment_type: PaymentType
    item_reference: str


@dataclass(frozen=True)
class Amount:
    value: Decimal
    currency: str


def from_minor_units(amount: Any, currency: Any) -> Amount:
    """Stripe amounts are integers in the currency's minor unit with a lower-case currency code."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise Unroutable(f"amount must be a non-negative integer of minor units, got {amount!r}")
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Za-z]{3}", currency):
        raise Unroutable(f"currency must be a three-letter code, got {currency!r}")
    code = currency.upper()
    return Amount(quantize(Decimal(amount).scaleb(-minor_units(code)), code), code)


def route_from_metadata(metadata: Any) -> PaymentRoute:
    """Read `account_number`, `payment_type`, `item_reference`; raises `Unroutable` naming the bad field."""
    if not isinstance(metadata, dict):
        raise Unroutable("metadata missing")
    for name in METADATA_FIELDS:
        value = metadata.get(name)
        if not isinstance(value, str) or not value.strip():
            raise Unroutable(f"metadata.{name} missing")
        if len(value) > 100:
            raise Unroutable(f"metadata.{name} longer than 100 characters")
    try:
        payment_type = PaymentType(metadata["payment_type"].strip().lower())
    except ValueError:
        raise Unroutable(
            f"metadata.payment_type must be one of bill, service, installment, got {metadata['payment_type']!r}"
        ) from None
    return PaymentRoute(metadata["account_number"].strip(), payment_type, metadata["item_reference"].strip())


def has_route(metadata: Any) -> bool:
    """True if the metadata carries all three routing fields (they may still be invalid)."""
    return isinstance(metadata, dict) and any(metadata.get(name) for name in METADATA_FIELDS)


def stripe_time(created: Any) -> datetime:
    """Stripe's `created` (Unix seconds) as an aware UTC datetime."""
    if isinstance(created, bool) or not isinstance(created, int) or not 0 <= created < 253402300800:
        raise Unroutable(f"created must be Unix seconds, got {created!r}")
    return datetime.fromtimestamp(created, UTC)


def object_id(value: Any, prefix: str) -> str | None:
    """The id of an expandable Stripe field: either the id string or the expanded object's `id`."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, str) and value.startswith(prefix) and len(value) <= 255:
        return value
    return None


def charge_status(event_type: str, charge: dict[str, Any]) -> str:
    """The gateway status a charge event means: a dispute (opened, under review, won or lost), a full refund, or a
    partial refund."""
    if event_type == "charge.dispute.created":
        return "disputed"
    if event_type in ("charge.dispute.updated", "charge.dispute.closed"):
        status = charge.get("status")
        if status not in DISPUTE_STATUSES:
            raise Unroutable(f"data.object.status {status!r} is not a dispute status we know")
        if event_type == "charge.dispute.closed" and DISPUTE_STATUSES[status] not in ("dispute_won", "dispute_lost"):
            raise Unroutable(f"a closed dispute must be won, lost or warning_closed, got {status!r}")
        return DISPUTE_STATUSES[status]
    return "refunded" if charge.get("refunded") is True else "partially_refunded"


@dataclass(frozen=True)
class SettlementItem:
    """One payment in a payout: the charge and the payment intent it belongs to."""

    charge_id: str
    payment_intent_id: str | None


def settlement_items(balance_transactions: list[dict[str, Any]]) -> list[SettlementItem]:
    """The payments a payout settles: balance transactions of type charge/payment, with their source charge.

    Fees, refunds and the payout's own transaction are not payments and are left out.
    """
    items = []
    for transaction in balance_transactions:
        if transaction.get("type") not in ("charge", "payment"):
            continue
        source = transaction.get("source")
        charge_id = object_id(source, "ch_") or object_id(source, "py_")
        if charge_id is None:
            continue
        intent = object_id(source.get("payment_intent"), "pi_") if isinstance(source, dict) else None
        items.append(SettlementItem(charge_id, intent))
    return items


def signed_from_minor_units(amount: Any, currency: Any) -> Amount:
    """Like `from_minor_units`, for amounts Stripe signs (a refund's balance transaction is negative)."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise Unroutable(f"amount must be an integer of minor units, got {amount!r}")
    positive = from_minor_units(abs(amount), currency)
    return Amount(-positive.value if amount < 0 else positive.value, positive.currency)


@dataclass(frozen=True)
class ListedTransaction:
    """One balance transaction of a payout, read from Stripe's listing (amounts in major units, signed)."""

    balance_transaction_id: str
    type: str
    amount: Amount
    fee: Amount
    net: Amount
    payment_intent_id: str | None
    source_id: str | None


def payout_transactions(payout_id: str, balance_transactions: list[dict[str, Any]]) -> list[ListedTransaction]:
    """What a payout carries: every balance transaction Stripe lists for it except the payout's own (type
    `payout`, source the payout), so the nets add up to the payout's amount."""
    listed = []
    for transaction in balance_transactions:
        source = transaction.get("source")
        source_id = object_id(source, "")
        if transaction.get("type") == "payout" and source_id == payout_id:
            continue
        currency = transaction.get("currency")
        intent = source.get("payment_intent") if isinstance(source, dict) else None
        listed.append(
            ListedTransaction(
                balance_transaction_id=str(transaction.get("id")),
                type=str(transaction.get("type")),
                amount=signed_from_minor_units(transaction.get("amount"), currency),
                fee=signed_from_minor_units(transaction.get("fee") or 0, currency),
                net=signed_from_minor_units(transaction.get("net"), currency),
                payment_intent_id=object_id(intent, "pi_"),
                source_id=source_id,
            )
        )
    return listed
