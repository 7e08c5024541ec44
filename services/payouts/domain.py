"""Payouts' pure rules: payees, commission rules, payout statuses and the plan of a payout run. No I/O.

Rounding is stated once: every amount is rounded to its currency's minor unit with `shared.money.quantize`
(banker's rounding, `shared.money.ROUNDING`), a commission when it is calculated and a converted amount when it
is converted; a payout is the sum of already rounded lines, so it never needs rounding itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from enum import StrEnum

import pycountry
from schwifty import BIC, IBAN
from schwifty.exceptions import SchwiftyException

from shared.errors import Rejected
from shared.money import ROUNDING, minor_units, quantize

ZERO = Decimal(0)
HUNDRED = Decimal(100)
# The rounding every amount of this service gets, named once for documents and the provenance of conversions.
ROUNDING_RULE = f"{ROUNDING} to the currency's minor unit"
SYSTEM = "system"


def to_minor(amount: Decimal, currency: str) -> Decimal:
    """The one rounding of this service: to the currency's minor unit, banker's rounding."""
    return quantize(amount, currency)


def minor_integer(amount: Decimal, currency: str) -> int:
    """An amount in the currency's smallest unit (cents), as Stripe and pain.001 libraries take it."""
    return int(to_minor(amount, currency).scaleb(minor_units(currency)))


def currency_code(value: str, *, field: str = "currency") -> str:
    """An ISO 4217 currency code, upper-cased; anything else is refused naming the field."""
    code = (value or "").strip().upper()
    if len(code) != 3 or pycountry.currencies.get(alpha_3=code) is None:
        raise Rejected("unknown_currency", f"{value!r} is not an ISO 4217 currency code", field=field)
    return code


def country_code(value: str, *, field: str = "country") -> str:
    code = (value or "").strip().upper()
    if len(code) != 2 or pycountry.countries.get(alpha_2=code) is None:
        raise Rejected("unknown_country", f"{value!r} is not an ISO 3166 country code", field=field)
    return code


# --- payees ---


class PayeeType(StrEnum):
    AGENT = "agent"
    PARTNER = "partner"
    CUSTOMER = "customer"


class PayoutMethod(StrEnum):
    STRIPE = "stripe"  # a transfer to the payee's Stripe connected account
    BANK = "bank"  # a credit transfer in a pain.001 file for the bank


class PayeeStatus(StrEnum):
    ACTIVE = "Active"
    SUSPENDED = "Suspended"
    INCOMPLETE = "Incomplete"  # made from a refund request; no payout method yet


class Schedule(StrEnum):
    MONTHLY = "monthly"
    WEEKLY = "weekly"
    ON_REQUEST = "on_request"


_STRIPE_ACCOUNT = re.compile(r"acct_[A-Za-z0-9]{6,64}")


@dataclass(frozen=True)
class PayoutDetails:
    """Where a payee's money goes: validated once, here, for the API and for imports alike."""

    method: PayoutMethod | None
    stripe_account: str | None = None
    iban: str | None = None
    bic: str | None = None


def payout_details(
    method: str | None, *, stripe_account: str | None, iban: str | None, bic: str | None, required: bool = True
) -> PayoutDetails:
    """Validate a payout method: a Stripe connected account id, or an IBAN (and BIC) checked with schwifty."""
    if not method:
        if required:
            raise Rejected("payout_method_required", "a payee needs a payout method (stripe or bank)", field="method")
        return PayoutDetails(method=None)
    try:
        chosen = PayoutMethod(method.strip().lower())
    except ValueError:
        raise Rejected("unknown_method", f"method is one of stripe, bank; not {method!r}", field="method") from None
    if chosen is PayoutMethod.STRIPE:
        account = (stripe_account or "").strip()
        if not _STRIPE_ACCOUNT.fullmatch(account):
            raise Rejected(
                "invalid_stripe_account", "a Stripe connected account id looks like acct_1A2b3C", field="stripe_account"
            )
        return PayoutDetails(method=chosen, stripe_account=account)
    if not iban or not iban.strip():
        raise Rejected("iban_required", "a bank payee needs an IBAN", field="iban")
    try:
        checked = IBAN(iban)
    except SchwiftyException as exc:
        raise Rejected("invalid_iban", f"invalid IBAN: {exc}", field="iban") from None
    bic_text: str | None = None
    if bic and bic.strip():
        try:
            bic_text = str(BIC(bic.strip()))
        except SchwiftyException as exc:
            raise Rejected("invalid_bic", f"invalid BIC: {exc}", field="bic") from None
    elif checked.bic is not None:
        bic_text = str(checked.bic)
    return PayoutDetails(method=chosen, iban=checked.compact, bic=bic_text)


# --- commission rules ---


class RuleKind(StrEnum):
    PERCENTAGE = "percentage"  # a share of each payment
    FIXED = "fixed"  # a fixed amount per payment
    TIERED = "tiered"  # a share that depends on the month's volume, marginally (like tax bands)


@dataclass(frozen=True)
class Tier:
    """From `from_volume` of the month's collected volume on, `percent` of each further unit."""

    from_volume: Decimal
    percent: Decimal


@dataclass(frozen=True)
class CommissionRule:
    """One version of a payee's (or a payee group's) commission rule, effective from a date.

    A rule is never edited: a change is a new version from a later date, so commissions already accrued keep
    the rule they were calculated with (each line stores its rule and calculation).
    """

    rule_id: str
    kind: RuleKind
    currency: str
    effective_from: date
    effective_to: date | None = None
    percent: Decimal | None = None
    fixed: Decimal | None = None
    tiers: tuple[Tier, ...] = ()
    minimum_per_payment: Decimal | None = None
    cap_per_payment: Decimal | None = None
    cap_per_month: Decimal | None = None
    payee_id: str | None = None
    payee_group: str | None = None

    def effective_on(self, day: date) -> bool:
        return self.effective_from <= day and (self.effective_to is None or day < self.effective_to)

    def describe(self) -> str:
        """The rule in one line, as statements print it."""
        if self.kind is RuleKind.PERCENTAGE:
            text = f"{plain(self.percent)}% of each payment"
        elif self.kind is RuleKind.FIXED:
            text = f"{plain(self.fixed)} {self.currency} per payment"
        else:
            bands = ", ".join(f"{plain(t.percent)}% from {plain(t.from_volume)}" for t in self.tiers)
            text = f"tiered by monthly volume ({bands})"
        limits = [
            f"{label} {plain(value)}"
            for label, value in (
                ("minimum per payment", self.minimum_per_payment),
                ("cap per payment", self.cap_per_payment),
                ("cap per month", self.cap_per_month),
            )
            if value is not None
        ]
        return f"{text} ({'; '.join([self.currency, *limits])})"


def plain(value: Decimal | None) -> str:
    """A decimal without trailing zeros or exponent: 2.5000 -> 2.5, 100 -> 100."""
    if value is None:
        return ""
    return format(value.normalize(), "f")


def _non_negative(value: Decimal | None, name: str) -> None:
    if value is not None and value < 0:
        raise Rejected("negative_amount", f"{name} cannot be negative", field=name)


def validate_rule(rule: CommissionRule) -> CommissionRule:
    """A rule that can be calculated: the kind's parameters present, nothing negative, tiers ascending from 0."""
    currency_code(rule.currency)
    if (rule.payee_id is None) == (rule.payee_group is None):
        raise Rejected("rule_scope", "a rule applies to one payee or to one payee group", field="payee_id")
    if rule.effective_to is not None and rule.effective_to <= rule.effective_from:
        raise Rejected("rule_dates", "effective_to must be after effective_from", field="effective_to")
    if rule.kind is RuleKind.PERCENTAGE and (rule.percent is None or not ZERO <= rule.percent <= HUNDRED):
        raise Rejected("percent_required", "a percentage rule needs percent between 0 and 100", field="percent")
    if rule.kind is RuleKind.FIXED and (rule.fixed is None or rule.fixed < 0):
        raise Rejected("fixed_required", "a fixed rule needs a non-negative amount per payment", field="fixed")
    if rule.kind is RuleKind.TIERED:
        if not rule.tiers or rule.tiers[0].from_volume != 0:
            raise Rejected("tiers_required", "tiers start at volume 0", field="tiers")
        volumes = [t.from_volume for t in rule.tiers]
        if volumes != sorted(set(volumes)):
            raise Rejected("tiers_order", "tier volumes are strictly ascending", field="tiers")
        if any(not ZERO <= t.percent <= HUNDRED for t in rule.tiers):
            raise Rejected("tiers_percent", "tier percentages are between 0 and 100", field="tiers")
    for name in ("minimum_per_payment", "cap_per_payment", "cap_per_month"):
        _non_negative(getattr(rule, name), name)
    if (
        rule.minimum_per_payment is not None
        and rule.cap_per_payment is not None
        and rule.minimum_per_payment > rule.cap_per_payment
    ):
        raise Rejected("minimum_above_cap", "the minimum is above the cap per payment", field="minimum_per_payment")
    return rule


def choose_rule(
    rules: Iterable[CommissionRule], *, payee_id: str, group: str | None, day: date
) -> CommissionRule | None:
    """The rule in force on `day`: the payee's own before its group's."""
    effective = [r for r in rules if r.effective_on(day)]
    own = [r for r in effective if r.payee_id == payee_id]
    if own:
        return max(own, key=lambda r: r.effective_from)
    shared = [r for r in effective if group is not None and r.payee_group == group]
    return max(shared, key=lambda r: r.effective_from) if shared else None


def tiered_amount(tiers: Sequence[Tier], volume_before: Decimal, amount: Decimal) -> Decimal:
    """The marginal commission on the band [volume_before, volume_before + amount) of the month's volume.

    Marginal, so the commissions of a month's payments add up to the same figure in whatever order they come.
    """
    start, end = volume_before, volume_before + amount
    total = ZERO
    for index, tier in enumerate(tiers):
        upper = tiers[index + 1].from_volume if index + 1 < len(tiers) else None
        low = max(start, tier.from_volume)
        high = end if upper is None else min(end, upper)
        if high > low:
            total += (high - low) * tier.percent / HUNDRED
    return total


@dataclass(frozen=True)
class MonthToDate:
    """What a payee collected and earned in commissions earlier in the same month (same currency)."""

    volume: Decimal = ZERO
    commission: Decimal = ZERO


@dataclass(frozen=True)
class Commission:
    amount: Decimal
    currency: str
    explanation: str


def commission_for(rule: CommissionRule, payment: Decimal, currency: str, month: MonthToDate) -> Commission:
    """The commission on one payment under `rule`, never negative, rounded once to the currency's minor unit."""
    if currency != rule.currency:
        raise Rejected(
            "rule_currency_mismatch",
            f"rule {rule.rule_id} is in {rule.currency}, the payment in {currency}",
            field="currency",
        )
    if payment <= 0:
        return Commission(ZERO, currency, "no commission on a non-positive payment")
    steps: list[str] = []
    if rule.kind is RuleKind.PERCENTAGE:
        assert rule.percent is not None
        raw = payment * rule.percent / HUNDRED
        steps.append(f"{rule.percent}% of {payment}")
    elif rule.kind is RuleKind.FIXED:
        assert rule.fixed is not None
        raw = rule.fixed
        steps.append(f"fixed {rule.fixed}")
    else:
        raw = tiered_amount(rule.tiers, month.volume, payment)
        steps.append(f"tiers on volume {month.volume} to {month.volume + payment}")
    value = raw
    if rule.minimum_per_payment is not None and value < rule.minimum_per_payment:
        value = rule.minimum_per_payment
        steps.append(f"raised to the minimum {rule.minimum_per_payment}")
    if rule.cap_per_payment is not None and value > rule.cap_per_payment:
        value = rule.cap_per_payment
        steps.append(f"capped at {rule.cap_per_payment} per payment")
    value = to_minor(value, currency)
    if rule.cap_per_month is not None:
        room = max(rule.cap_per_month - month.commission, ZERO)
        if value > room:
            value = to_minor(room, currency)
            steps.append(f"capped by the monthly cap {rule.cap_per_month} ({month.commission} earned before)")
    return Commission(value, currency, "; ".join(steps))


# --- earnings lines ---


class LineKind(StrEnum):
    COMMISSION = "commission"
    REVERSAL = "reversal"
    REFUND = "refund"
    MANUAL = "manual"
    ADJUSTMENT = "adjustment"
    IMPORT = "import"


class LineStatus(StrEnum):
    OPEN = "Open"  # owed, waiting for a run
    IN_RUN = "In run"  # part of a payout not yet paid
    PAID = "Paid"
    PENDING_APPROVAL = "Pending approval"  # a manual line above the limit
    REJECTED = "Rejected"


MANUAL_KINDS = (LineKind.MANUAL, LineKind.ADJUSTMENT)


def manual_amount(kind: LineKind, amount: Decimal, currency: str) -> Decimal:
    """A manual earning is positive; an adjustment may be either sign but not zero; both in the minor unit."""
    if quantize(amount, currency) != amount:
        raise Rejected("amount_precision", f"at most {minor_units(currency)} decimals for {currency}", field="amount")
    if kind is LineKind.MANUAL and amount <= 0:
        raise Rejected("amount_not_positive", "a manual earning is a positive amount", field="amount")
    if amount == 0:
        raise Rejected("amount_zero", "an adjustment is not zero", field="amount")
    return amount


def reversal_of(amount: Decimal) -> Decimal:
    """The amount that takes a line back: together they net to exactly zero."""
    return -amount


# --- payouts ---


class PayoutStatus(StrEnum):
    SCHEDULED = "Scheduled"
    APPROVED = "Approved"
    SENT = "Sent"
    PAID = "Paid"
    FAILED = "Failed"
    RETURNED = "Returned"


class RunStatus(StrEnum):
    PENDING_APPROVAL = "Pending approval"
    APPROVED = "Approved"
    EXECUTED = "Executed"
    REJECTED = "Rejected"


# Where a payout may go next. Paid may still be returned by the bank; Failed and Returned are final (their lines
# go back to the next run). Approved may jump to a final status when the gateway reports a transfer we sent
# before a crash kept us from recording it.
_NEXT: dict[PayoutStatus, frozenset[PayoutStatus]] = {
    PayoutStatus.SCHEDULED: frozenset({PayoutStatus.APPROVED}),
    PayoutStatus.APPROVED: frozenset(
        {PayoutStatus.SENT, PayoutStatus.PAID, PayoutStatus.FAILED, PayoutStatus.RETURNED}
    ),
    PayoutStatus.SENT: frozenset({PayoutStatus.PAID, PayoutStatus.FAILED, PayoutStatus.RETURNED}),
    PayoutStatus.PAID: frozenset({PayoutStatus.RETURNED}),
    PayoutStatus.FAILED: frozenset(),
    PayoutStatus.RETURNED: frozenset(),
}
FINAL_UNPAID = frozenset({PayoutStatus.FAILED, PayoutStatus.RETURNED})


def can_move(current: PayoutStatus, target: PayoutStatus) -> bool:
    """Whether a payout may move; a late or repeated report (not allowed) changes nothing."""
    return target in _NEXT[current]


# Stripe's event types (through gateway_bridge) and what they mean for a payout. Stripe's API no longer sends
# `transfer.paid` or `transfer.failed` (a transfer lands in the connected account's balance when it is created);
# they stay mapped for accounts on old API versions.
GATEWAY_STATUS = {
    "transfer.created": PayoutStatus.SENT,
    "transfer.paid": PayoutStatus.PAID,
    "transfer.failed": PayoutStatus.FAILED,
    "transfer.reversed": PayoutStatus.RETURNED,
    "payout.paid": PayoutStatus.PAID,
    "payout.failed": PayoutStatus.FAILED,
    "payout.canceled": PayoutStatus.FAILED,
}


def gateway_status(
    event_type: str, current: PayoutStatus | None = None, *, fully_reversed: bool = True
) -> PayoutStatus | None:
    """What a Stripe event makes of a payout that is `current` now; None: the event does not move it.

    A payout Stripe reported paid can still fail days later when the bank sends the money back: Stripe then sends
    `payout.failed` (or `transfer.failed`) for it, which for us is Returned. A partial transfer reversal
    (`amount_reversed` below the amount) leaves the payout as it is; only a full reversal returns it."""
    target = GATEWAY_STATUS.get(event_type)
    if target is PayoutStatus.FAILED and current is PayoutStatus.PAID:
        return PayoutStatus.RETURNED
    if target is PayoutStatus.RETURNED and not fully_reversed:
        return None
    return target


def transfer_of(payout_id: str, amount_minor: int, currency: str, transfers: Iterable[dict[str, object]]) -> str | None:
    """Which of the transfers Stripe lists (for the payout's run) is the payout's own, by the metadata we set on
    it and the amount and currency we asked for; None if none is. Two matching transfers would mean the payout
    was paid twice: the first one listed is named, and the double payment must be looked at by a person."""
    for transfer in transfers:
        metadata = transfer.get("metadata")
        if not isinstance(metadata, dict) or metadata.get("paydesk_payout_id") != payout_id:
            continue
        if transfer.get("amount") == amount_minor and str(transfer.get("currency", "")).upper() == currency.upper():
            return str(transfer["id"])
    return None


def period_start(schedule: Schedule, today: date) -> date | None:
    """The first day of the pay period `today` is in: the Monday of its week (weekly) or the 1st of its month
    (monthly); None for payees paid on request."""
    if schedule is Schedule.WEEKLY:
        return today - timedelta(days=today.weekday())
    if schedule is Schedule.MONTHLY:
        return today.replace(day=1)
    return None


def due_periods(today: date) -> tuple[tuple[Schedule, date], ...]:
    """The scheduled runs that should exist by `today`: one per schedule for the period `today` is in, paying the
    lines earned before that period. A run missed while the service was down is made on the next check, so the
    current period's run is due on any day of the period, not only on its first (Monday, the 1st)."""
    due = ((schedule, period_start(schedule, today)) for schedule in (Schedule.WEEKLY, Schedule.MONTHLY))
    return tuple((schedule, start) for schedule, start in due if start is not None)


def month_of(day: date) -> tuple[date, date]:
    """The first day of `day`'s month and the first day of the next."""
    start = day.replace(day=1)
    following = (start + timedelta(days=32)).replace(day=1)
    return start, following


@dataclass(frozen=True)
class Agent:
    """A payee that earns on what it collects: through a channel, and as one user of it if `user` is set."""

    payee_id: str
    payee_group: str | None
    channel: str
    user: str | None


def agent_for(agents: Iterable[Agent], channel: str, received_by: str) -> Agent | None:
    """The agent earning on a payment: the one linked to its channel and user, else to the channel alone; the
    lowest payee id where several are linked alike, so every path picks the same one."""
    linked = [a for a in agents if a.channel == channel and a.user in (None, received_by)]
    return min(linked, key=lambda a: (a.user is None, a.payee_id), default=None)
