"""Pure payment rules: numbering, amounts (analysis, allocation, cash change), settings, statuses, disputes,
adjustments, balance, the payments list query and items held by arrangements. No I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from shared import ledger
from shared.contracts import PaymentStatus
from shared.errors import Rejected


class Outcome(StrEnum):
    EXACT = "exact"
    OVER = "over"
    UNDER = "under"


@dataclass(frozen=True)
class NumberFormat:
    """How a document number looks, e.g. prefix `PAY-`, with year, padded to 6: `PAY-2025-004521`."""

    prefix: str
    with_year: bool
    padding: int
    start: int

    def render(self, sequence_value: int, year: int) -> str:
        number = str(self.start + sequence_value - 1).zfill(self.padding)
        return f"{self.prefix}{year}-{number}" if self.with_year else f"{self.prefix}{number}"


DEFAULT_FORMATS = {
    "payment_id": NumberFormat(prefix="PAY-", with_year=True, padding=6, start=4521),
    "transaction_id": NumberFormat(prefix="TXN-", with_year=True, padding=6, start=8934),
    "receipt_number": NumberFormat(prefix="R-", with_year=False, padding=4, start=5001),
}


@dataclass(frozen=True)
class Analysis:
    """Billed (due) against paid for the item a payment went to."""

    due: Decimal
    paid: Decimal

    @property
    def difference(self) -> Decimal:
        return self.paid - self.due

    @property
    def outcome(self) -> Outcome:
        if self.difference == 0:
            return Outcome.EXACT
        return Outcome.OVER if self.difference > 0 else Outcome.UNDER

    @property
    def overpaid(self) -> Decimal:
        return max(self.difference, Decimal(0))


@dataclass(frozen=True)
class Allocation:
    """How much of a payment settles the item, and what is left outstanding on it."""

    applied: Decimal
    outstanding_after: Decimal


def allocate(outstanding: Decimal, amount: Decimal, overpayment_threshold: Decimal) -> Allocation:
    """Apply `amount` to an item owing `outstanding`; more than outstanding + threshold is refused."""
    if amount <= 0:
        raise Rejected("amount_not_positive", "amount must be greater than 0", field="amount")
    if amount > outstanding + overpayment_threshold:
        raise Rejected(
            "amount_exceeds_outstanding",
            f"amount {amount} exceeds the outstanding {outstanding} plus the allowed overpayment "
            f"{overpayment_threshold}",
            field="amount",
        )
    applied = min(amount, outstanding)
    return Allocation(applied=applied, outstanding_after=outstanding - applied)


def allocate_in_order(
    outstanding: Mapping[tuple[str, str], Decimal],
    payments: Sequence[tuple[tuple[str, str], Decimal]],
    overpayment_threshold: Decimal,
) -> list[tuple[Decimal, Allocation]]:
    """`allocate` for several payments at once, in the order given: each sees what the ones before it left on
    its item. Returns, per payment, what was due on the item before it and its allocation."""
    left = dict(outstanding)
    result = []
    for item, amount in payments:
        due = left[item]
        allocation = allocate(due, amount, overpayment_threshold)
        left[item] = allocation.outstanding_after
        result.append((due, allocation))
    return result


def change_given(amount: Decimal, cash_received: Decimal | None) -> Decimal | None:
    """Change for a cash payment; the cash handed over must cover the amount."""
    if cash_received is None:
        return None
    if cash_received < amount:
        raise Rejected("cash_received_too_low", "cash received must be at least the amount", field="cash_received")
    return cash_received - amount


@dataclass(frozen=True)
class Assessment:
    """What a payment would come to, and every rule it breaks (`POST /payments/preview`)."""

    analysis: Analysis | None
    change: Decimal | None
    problems: tuple[Rejected, ...]


def assess_payment(
    config: PaymentSettings,
    *,
    channel: str,
    method: str,
    outstanding: Decimal | None,
    amount: Decimal,
    cash_received: Decimal | None,
) -> Assessment:
    """The checks `POST /payments` makes (`PaymentSettings.check`, `allocate`, `change_given`), each one run and
    its refusal collected rather than raised; `outstanding` is None when the item is unknown."""
    problems: list[Rejected] = []
    try:
        config.check(channel=channel, method=method)
    except Rejected as problem:
        problems.append(problem)
    if outstanding is not None:
        try:
            allocate(outstanding, amount, config.overpayment_threshold)
        except Rejected as problem:
            problems.append(problem)
    change: Decimal | None = None
    try:
        change = change_given(amount, cash_received)
    except Rejected as problem:
        problems.append(problem)
    analysis = Analysis(due=outstanding, paid=amount) if outstanding is not None else None
    return Assessment(analysis=analysis, change=change, problems=tuple(problems))


# --- settings: what staff may choose, and how documents are numbered ---

NUMBER_KINDS = ("payment_id", "transaction_id", "receipt_number")
DEFAULT_CHANNEL = "Walk-in"


@dataclass(frozen=True)
class PaymentSettings:
    """Settings a counter payment is checked against; kept in the database, edited by an admin."""

    channels: tuple[str, ...] = (DEFAULT_CHANNEL, "Phone", "Mobile Field Collection", "Online", "Enterprise")
    payment_methods: tuple[str, ...] = ("Cash", "Credit Card", "Debit Card", "Cheque", "Bank Transfer")
    overpayment_threshold: Decimal = Decimal("1000.00")
    number_formats: dict[str, NumberFormat] | None = None
    # Adjustments moving more than this wait for a billing manager's approval.
    adjustment_approval_limit: Decimal = Decimal("100.00")

    @property
    def default_channel(self) -> str:
        return DEFAULT_CHANNEL if DEFAULT_CHANNEL in self.channels else self.channels[0]

    def format_for(self, kind: str) -> NumberFormat:
        return (self.number_formats or DEFAULT_FORMATS).get(kind, DEFAULT_FORMATS[kind])

    def check(self, *, channel: str, method: str) -> None:
        if channel not in self.channels:
            raise Rejected("unknown_channel", f"channel must be one of: {', '.join(self.channels)}", field="channel")
        if method not in self.payment_methods:
            raise Rejected(
                "unknown_method", f"method must be one of: {', '.join(self.payment_methods)}", field="method"
            )


def check_choices(values: list[str], field: str) -> tuple[str, ...]:
    """A settings list: non-empty, no blanks, no duplicates (case-insensitive)."""
    cleaned = [v.strip() for v in values]
    if not cleaned:
        raise Rejected("empty_list", f"{field} needs at least one entry", field=field)
    if any(not v for v in cleaned):
        raise Rejected("blank_entry", f"{field} may not contain blank entries", field=field)
    if len({v.casefold() for v in cleaned}) != len(cleaned):
        raise Rejected("duplicate_entry", f"{field} may not contain the same entry twice", field=field)
    return tuple(cleaned)


def check_number_format_change(kind: str, old: NumberFormat, new: NumberFormat) -> NumberFormat:
    """Numbers are never reused: with the same prefix, a format may only move its start forward."""
    check_number_format(kind, new)
    if new.prefix == old.prefix and new.with_year == old.with_year and new.start < old.start:
        raise Rejected(
            "start_moves_back",
            f"start may not go below {old.start} while the prefix stays {old.prefix!r}: numbers would repeat",
            field=f"{kind}.start",
        )
    return new


def change_number_formats(current: PaymentSettings, requested: Mapping[str, NumberFormat]) -> dict[str, NumberFormat]:
    """Every kind's format after an admin's change: requested kinds checked against their current format."""
    formats = {kind: current.format_for(kind) for kind in NUMBER_KINDS}
    for kind, new in requested.items():
        if kind not in NUMBER_KINDS:
            raise Rejected("unknown_number_format", f"number formats are {', '.join(NUMBER_KINDS)}", field=kind)
        formats[kind] = check_number_format_change(kind, formats[kind], new)
    return formats


def check_number_format(kind: str, fmt: NumberFormat) -> NumberFormat:
    if kind not in NUMBER_KINDS:
        raise Rejected("unknown_number_format", f"number formats are {', '.join(NUMBER_KINDS)}", field=kind)
    if not fmt.prefix or len(fmt.prefix) > 10:
        raise Rejected("invalid_prefix", "prefix must have 1 to 10 characters", field=f"{kind}.prefix")
    if not 1 <= fmt.padding <= 12:
        raise Rejected("invalid_padding", "padding must be between 1 and 12", field=f"{kind}.padding")
    if fmt.start < 1:
        raise Rejected("invalid_start", "start must be at least 1", field=f"{kind}.start")
    return fmt


# --- statuses: counter payments post at once; online payments follow the gateway, forward only ---


class Verification(StrEnum):
    VERIFIED = "Verified"
    PENDING = "Pending"


# Stripe's word for a payment intent's state -> our status. Later states outrank earlier ones.
GATEWAY_STATUS = {
    "processing": PaymentStatus.PENDING,
    "failed": PaymentStatus.FAILED,
    "succeeded": PaymentStatus.POSTED,
    # Part of the money went back: the payment stays posted; the refund is kept in the audit trail.
    "partially_refunded": PaymentStatus.POSTED,
    "disputed": PaymentStatus.DISPUTED,
    "refunded": PaymentStatus.REFUNDED,
}
# The gateway's words for a dispute's life after it opened (`disputes.py` applies them, not the rank below).
DISPUTE_GATEWAY_STATUSES = {"disputed", "dispute_under_review", "dispute_won", "dispute_lost"}
_STATUS_RANK = {
    PaymentStatus.PENDING: 0,
    PaymentStatus.FAILED: 1,
    PaymentStatus.POSTED: 2,
    PaymentStatus.DISPUTED: 3,
    PaymentStatus.REFUNDED: 4,
    PaymentStatus.CHARGED_BACK: 4,
}
# Money that went back is not going to be settled: the settlement status says N/A from then on.
NOT_SETTLED = "N/A"
MONEY_WENT_BACK = frozenset({PaymentStatus.REFUNDED, PaymentStatus.CHARGED_BACK, PaymentStatus.CANCELLED})
# A payout reported paid can still fail later (the bank returns it), so Failed outranks Success. Settled is
# reconciliation's word: the money is on our bank statement. It outranks Failed too: Stripe puts a failed payout's
# money back in the balance and pays it out again, and once our bank shows it nothing moves it back.
SETTLED = "Settled"
_SETTLEMENT_RANK = {"N/A": 0, "In Progress": 1, "Success": 2, "Failed": 3, SETTLED: 4}


def online_status(gateway_status: str) -> PaymentStatus:
    try:
        return GATEWAY_STATUS[gateway_status]
    except KeyError:
        raise Rejected(
            "unknown_gateway_status", f"gateway status {gateway_status!r} has no mapping", field="gateway_status"
        ) from None


def moves_forward(current: PaymentStatus, incoming: PaymentStatus) -> bool:
    """Gateway events arrive out of order: a late `processing` never overwrites `succeeded`.

    A cancelled payment stays cancelled whatever the gateway says later.
    """
    if current in MONEY_WENT_BACK:
        return False
    return _STATUS_RANK[incoming] > _STATUS_RANK[current]


def settlement_moves_forward(current: str | None, incoming: str) -> bool:
    return _SETTLEMENT_RANK.get(incoming, 0) > _SETTLEMENT_RANK.get(current or "N/A", 0)


def processing_time(*, online: bool, started_at: datetime, settled_at: datetime | None, now: datetime) -> str:
    """ "Immediate" at the counter; for online payments the days from the gateway's start to settlement
    (or until now while it is still settling), to one decimal."""
    if not online:
        return "Immediate"
    seconds = ((settled_at or now) - started_at).total_seconds()
    days = (Decimal(max(seconds, 0)) / Decimal(86400)).quantize(Decimal("0.1"))
    return f"{days} days"


def check_cancellable(status: str, reason: str) -> None:
    if status not in (PaymentStatus.POSTED, PaymentStatus.PENDING):
        raise Rejected("not_cancellable", f"a {status} payment cannot be cancelled", field="status")
    if not reason.strip():
        raise Rejected("reason_required", "a cancellation needs a reason", field="reason")


def check_verifiable(online: bool, verification: str, status: str) -> None:
    if not online:
        raise Rejected("not_online", "only online payments wait for verification", field="payment_id")
    if verification == Verification.VERIFIED:
        raise Rejected("already_verified", "this payment is already verified", field="verification")
    if status not in (PaymentStatus.POSTED, PaymentStatus.DISPUTED):
        raise Rejected("not_posted", f"a {status} payment cannot be verified", field="status")


# --- disputes: Open -> Under review -> Won / Lost ---


class DisputeStatus(StrEnum):
    OPEN = "Open"
    UNDER_REVIEW = "Under review"
    WON = "Won"
    LOST = "Lost"


class DisputeOutcome(StrEnum):
    WON = "won"
    LOST = "lost"


_DISPUTE_MOVES = {
    DisputeStatus.OPEN: {DisputeStatus.UNDER_REVIEW, DisputeStatus.WON, DisputeStatus.LOST},
    DisputeStatus.UNDER_REVIEW: {DisputeStatus.WON, DisputeStatus.LOST},
}


def check_disputable(status: str) -> None:
    """Only money the utility holds can be disputed: a posted payment, not one already disputed or gone back."""
    if status != PaymentStatus.POSTED:
        raise Rejected("not_disputable", f"a {status} payment cannot be disputed", field="status")


def dispute_moves(current: str, target: DisputeStatus) -> bool:
    """Whether a dispute may move to `target`; a closed dispute never moves again."""
    return target in _DISPUTE_MOVES.get(DisputeStatus(current), set())


def check_dispute_move(current: str, target: DisputeStatus) -> None:
    if not dispute_moves(current, target):
        raise Rejected(
            "dispute_closed" if current in (DisputeStatus.WON, DisputeStatus.LOST) else "invalid_move",
            f"a dispute {current} cannot become {target}",
            field="status",
        )


def status_after_dispute(outcome: DisputeOutcome) -> PaymentStatus:
    """Won: the payment is Posted again and counts as collected. Lost: Charged back, reversed like a refund."""
    return PaymentStatus.POSTED if outcome is DisputeOutcome.WON else PaymentStatus.CHARGED_BACK


# --- adjustments: a posted payment moved to another item, or its amount corrected ---


class AdjustmentKind(StrEnum):
    MOVE = "move"
    AMOUNT = "amount"


@dataclass(frozen=True)
class PaymentLedger:
    """A payment's money: amount = applied (its item) + credited (became credit) + refunded (went back)."""

    amount: Decimal
    applied: Decimal
    credited: Decimal = Decimal("0.00")
    refunded: Decimal = Decimal("0.00")

    @property
    def cap(self) -> Decimal:
        return ledger.settlement_cap(self.amount, refunded=self.refunded, credited=self.credited)


@dataclass(frozen=True)
class AdjustmentPlan:
    """A reversal of `reversed` on the old item plus a new allocation of `applied` (on the new item, or the same)."""

    amount: Decimal
    reversed: Decimal
    applied: Decimal
    size: Decimal  # what the approval limit is compared with


def plan_adjustment(
    kind: AdjustmentKind,
    status: str,
    payment: PaymentLedger,
    *,
    target_outstanding: Decimal,
    new_amount: Decimal | None = None,
    same_item: bool = False,
) -> AdjustmentPlan:
    """Check an adjustment and work out its reversal and new allocation. `target_outstanding` is what the target
    item owes now (for a correction on the same item, before the payment's own allocation is reversed)."""
    if status != PaymentStatus.POSTED:
        raise Rejected("not_adjustable", f"a {status} payment cannot be adjusted", field="status")
    owed = target_outstanding + (payment.applied if same_item else Decimal(0))
    if kind is AdjustmentKind.MOVE:
        if same_item:
            raise Rejected("same_item", "the payment already settles this item", field="item_reference")
        amount, size = payment.amount, payment.applied
    else:
        if new_amount is None or new_amount <= 0:
            raise Rejected("amount_not_positive", "the corrected amount must be greater than 0", field="amount")
        if new_amount == payment.amount:
            raise Rejected("amount_unchanged", "the corrected amount is the amount already recorded", field="amount")
        if new_amount < payment.credited + payment.refunded:
            raise Rejected(
                "amount_below_credit_and_refunds",
                f"{new_amount} is less than the credit ({payment.credited}) and refunds ({payment.refunded}) made "
                "from this payment",
                field="amount",
            )
        amount, size = new_amount, abs(new_amount - payment.amount)
    cap = ledger.settlement_cap(amount, refunded=payment.refunded, credited=payment.credited)
    if cap > owed:
        raise Rejected(
            "adjustment_overpays",
            f"the payment would settle {cap} on an item owing {owed}: record the excess as credit instead",
            field="amount" if kind is AdjustmentKind.AMOUNT else "item_reference",
        )
    return AdjustmentPlan(amount=amount, reversed=payment.applied, applied=cap, size=size)


# --- balance: billing reports it; what we collected since then comes off it ---


def current_balance(reported: Decimal | None, collected_since_report: Decimal, open_items: Decimal) -> Decimal:
    """The balance billing last reported, less what was allocated here since; without a report, what is open."""
    if reported is None:
        return open_items
    return reported - collected_since_report


# --- the payments list: search, filters, sort (keyset paging is shared/paging.py) ---

# "Date" is the payment date the table shows and the date-range filter uses, so that filter is an index range.
SORTS = {"date": "payment_date", "-date": "payment_date", "amount": "amount", "-amount": "amount"}
MAX_PAGE = 200


@dataclass(frozen=True)
class PaymentQuery:
    q: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    method: str | None = None
    status: str | None = None
    payment_type: str | None = None
    sort: str = "-date"
    limit: int = 50
    # The opaque cursor of the previous page (shared/paging.py), as the client passed it back.
    cursor: str | None = None

    def __post_init__(self) -> None:
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise Rejected("invalid_date_range", "date_from must not be after date_to", field="date_from")
        if self.sort not in SORTS:
            raise Rejected("invalid_sort", f"sort must be one of: {', '.join(SORTS)}", field="sort")
        if not 1 <= self.limit <= MAX_PAGE:
            raise Rejected("invalid_limit", f"limit must be between 1 and {MAX_PAGE}", field="limit")
        if self.status is not None and self.status not in set(PaymentStatus):
            raise Rejected("invalid_status", f"status must be one of: {', '.join(PaymentStatus)}", field="status")

    @property
    def descending(self) -> bool:
        return self.sort.startswith("-")


# --- arrangements (collections): items held while an arrangement pays for them ---


class HoldKind(StrEnum):
    COVERED = "covered"  # a bill or charge the arrangement took over: its installments pay it
    WITHDRAWN = "withdrawn"  # an installment reference the arrangement no longer offers (rescheduled or ended)
    RELEASED = "released"  # the arrangement ended (broken, cancelled, completed): the item is payable again

    @property
    def holds(self) -> bool:
        return self is not HoldKind.RELEASED


def take_off_in_order(owed: Sequence[Decimal], received: Decimal) -> list[Decimal]:
    """What each covered item still owes after an arrangement received `received`: the money goes to the items in
    the order the arrangement took them over (earliest due first), never below zero, never more than received."""
    left = max(received, Decimal(0))
    remaining = []
    for amount in owed:
        share = min(max(amount, Decimal(0)), left)
        left -= share
        remaining.append(amount - share)
    return remaining


def give_back_in_reverse(owed: Sequence[Decimal], amounts: Sequence[Decimal], returned: Decimal) -> list[Decimal]:
    """A payment the arrangement lost back (cancelled, refunded): owed again by the items it was last taken off,
    each up to what it owed when taken over."""
    left = max(returned, Decimal(0))
    result = list(owed)
    for index in reversed(range(len(result))):
        share = min(max(amounts[index] - result[index], Decimal(0)), left)
        left -= share
        result[index] += share
    return result


def held_item(payment_type: str, reference: str, kind: HoldKind, arrangement_id: str) -> Rejected:
    """The refusal of a payment naming a held item: pay the arrangement's installments instead."""
    if kind is HoldKind.COVERED:
        detail = f"{payment_type} {reference} is covered by arrangement {arrangement_id}: pay its installments instead"
    else:
        detail = f"installment {reference} was withdrawn by arrangement {arrangement_id}: pay its current installments"
    return Rejected("item_held_by_arrangement", detail, field="item_reference")
