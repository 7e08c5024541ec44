"""Pure credit-note rules: numbering, limits, application, status, expiry and list filters. No I/O."""

from __future__ import annotations

import calendar
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any

from shared.contracts import PaymentStatus, counts_as_collected
from shared.errors import Rejected

ZERO = Decimal("0.00")
OVERPAYMENT = "Overpayment"
SYSTEM = "System"
REMARKS_MAX_LENGTH = 500
DEFAULT_REASONS = (
    "Overpayment",
    "Duplicate Payment",
    "Billing Error",
    "Billing Adjustment",
    "Refund Request",
    "Customer Request",
    "Other",
)


class Status(StrEnum):
    ACTIVE = "Active"
    APPLIED = "Applied"
    EXPIRED = "Expired"


@dataclass(frozen=True)
class NumberFormat:
    """How a credit-note number looks: prefix, then the sequence value offset by `start`, e.g. `CN-46129`."""

    prefix: str = "CN-"
    padding: int = 5
    start: int = 46129

    def render(self, sequence_value: int) -> str:
        return f"{self.prefix}{str(self.start + sequence_value - 1).zfill(self.padding)}"


# --- expiry ---


class PeriodUnit(StrEnum):
    DAYS = "days"
    MONTHS = "months"
    YEARS = "years"


def add_months(moment: datetime, months: int) -> datetime:
    """The same day and time `months` later; the 31st becomes the last day of a shorter month."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


@dataclass(frozen=True)
class ExpiryPeriod:
    """How long a credit note can be used; calendar months and years, so one year is the same date next year."""

    count: int = 1
    unit: PeriodUnit = PeriodUnit.YEARS

    def __post_init__(self) -> None:
        if self.count < 1:
            raise Rejected("expiry_period_not_positive", "the expiry period must be at least 1", field="expiry.count")
        longest = {PeriodUnit.DAYS: 3660, PeriodUnit.MONTHS: 120, PeriodUnit.YEARS: 10}[PeriodUnit(self.unit)]
        if self.count > longest:
            raise Rejected(
                "expiry_period_too_long",
                f"the expiry period may be at most {longest} {self.unit}",
                field="expiry.count",
            )

    def expires_at(self, created_at: datetime) -> datetime:
        if self.unit is PeriodUnit.DAYS:
            return created_at + timedelta(days=self.count)
        return add_months(created_at, self.count * (12 if self.unit is PeriodUnit.YEARS else 1))


REASON_MAX_LENGTH = 50


@dataclass(frozen=True)
class Policy:
    """What an admin configures: the expiry period and the reasons staff choose from."""

    expiry: ExpiryPeriod = ExpiryPeriod()
    reasons: tuple[str, ...] = DEFAULT_REASONS

    def __post_init__(self) -> None:
        if not self.reasons:
            raise Rejected("reasons_required", "at least one reason is required", field="reasons")
        for reason in self.reasons:
            if not reason.strip() or len(reason) > REASON_MAX_LENGTH or reason != reason.strip():
                raise Rejected(
                    "reason_invalid", f"each reason needs 1 to {REASON_MAX_LENGTH} characters", field="reasons"
                )
        if len({r.casefold() for r in self.reasons}) != len(self.reasons):
            raise Rejected("reasons_duplicated", "reasons must be unique", field="reasons")
        # Automatic credit notes always carry this reason, so it cannot be configured away.
        if OVERPAYMENT not in self.reasons:
            raise Rejected("overpayment_reason_required", f"the reason {OVERPAYMENT!r} must stay", field="reasons")

    def to_json(self) -> dict[str, object]:
        return {"expiry": {"count": self.expiry.count, "unit": self.expiry.unit.value}, "reasons": list(self.reasons)}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Policy:
        expiry = value["expiry"]
        return cls(ExpiryPeriod(int(expiry["count"]), PeriodUnit(expiry["unit"])), tuple(value["reasons"]))


# --- issuing ---


def validate_reason(reason: str, reasons: tuple[str, ...] | list[str]) -> str:
    """The reason must be one of the configured list (exact wording, as shown in the dropdown)."""
    if not reason or not reason.strip():
        raise Rejected("reason_required", "a reason is required", field="reason")
    if reason not in reasons:
        raise Rejected("unknown_reason", f"reason must be one of: {', '.join(reasons)}", field="reason")
    return reason


def validate_remarks(remarks: str | None) -> str | None:
    if remarks is None or not remarks.strip():
        return None
    if len(remarks) > REMARKS_MAX_LENGTH:
        raise Rejected("remarks_too_long", f"remarks may have at most {REMARKS_MAX_LENGTH} characters", field="remarks")
    return remarks.strip()


@dataclass(frozen=True)
class PaymentCredit:
    """A payment and the credit already issued against it; total credit never exceeds the payment amount."""

    amount: Decimal
    credited: Decimal = ZERO
    payment_status: str = PaymentStatus.POSTED

    @property
    def creditable(self) -> Decimal:
        """The most a new credit note on this payment may be: nothing unless its money was collected and stayed
        (a cancelled payment never happened, a refunded one went back to the customer)."""
        if not counts_as_collected(self.payment_status):
            return ZERO
        return max(self.amount - self.credited, ZERO)

    def issue(self, amount: Decimal) -> PaymentCredit:
        """Record a new credit note of `amount` against the payment, or refuse it."""
        if not counts_as_collected(self.payment_status):
            raise Rejected(
                f"payment_{self.payment_status.lower()}",
                f"a {self.payment_status.lower()} payment cannot get new credit notes",
                field="receipt_number",
            )
        if amount <= 0:
            raise Rejected("amount_not_positive", "the credit amount must be greater than 0", field="amount")
        if amount > self.creditable:
            raise Rejected(
                "amount_exceeds_payment",
                f"the credit amount {amount} exceeds the maximum {self.creditable} (payment {self.amount} minus "
                f"credit already issued {self.credited})",
                field="amount",
            )
        return replace(self, credited=self.credited + amount)

    @property
    def remaining_value(self) -> Decimal:
        """What is left of the payment after every credit note; 0 means a full reversal."""
        return max(self.amount - self.credited, ZERO)


def has_two_decimals(amount: Decimal) -> bool:
    exponent = amount.as_tuple().exponent
    return isinstance(exponent, int) and exponent >= -2


# --- using a credit note ---


def usage_percentage(applied: Decimal, amount: Decimal) -> Decimal:
    """(Applied / Original) x 100 with one decimal, rounded half up as people expect from a percentage."""
    if amount <= 0:
        return Decimal("0.0")
    return (applied * 100 / amount).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def status_for(remaining: Decimal, *, expired: bool = False) -> Status:
    if expired:
        return Status.EXPIRED
    return Status.ACTIVE if remaining > 0 else Status.APPLIED


@dataclass(frozen=True)
class CreditNote:
    """A credit note's balances: applied + remaining = amount, always; status follows the remaining balance."""

    amount: Decimal
    expires_at: datetime
    applied: Decimal = ZERO
    status: Status = Status.ACTIVE

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.applied

    def apply(self, amount: Decimal | None, *, item_outstanding: Decimal, now: datetime) -> tuple[CreditNote, Decimal]:
        """Use `amount` (default: as much as both allow) on an item owing `item_outstanding`."""
        if self.status is Status.EXPIRED or now >= self.expires_at:
            raise Rejected("credit_note_expired", "this credit note has expired")
        if self.remaining <= 0:
            raise Rejected("credit_note_used_up", "this credit note has no remaining balance")
        if item_outstanding <= 0:
            raise Rejected("item_not_open", "nothing is outstanding on this item", field="item_reference")
        if amount is None:
            amount = min(self.remaining, item_outstanding)
        if amount <= 0:
            raise Rejected("amount_not_positive", "the amount to apply must be greater than 0", field="amount")
        if amount > self.remaining:
            raise Rejected(
                "amount_exceeds_remaining",
                f"the amount {amount} exceeds the remaining credit {self.remaining}",
                field="amount",
            )
        if amount > item_outstanding:
            raise Rejected(
                "amount_exceeds_outstanding",
                f"the amount {amount} exceeds what is outstanding on the item ({item_outstanding})",
                field="amount",
            )
        applied = self.applied + amount
        return replace(self, applied=applied, status=status_for(self.amount - applied)), amount

    def is_due_to_expire(self, now: datetime) -> bool:
        return self.status is Status.ACTIVE and now >= self.expires_at

    def expire(self, now: datetime) -> CreditNote:
        """An active note past its expiry date becomes Expired; its unused balance can no longer be applied."""
        if not self.is_due_to_expire(now):
            raise Rejected("not_due_to_expire", "only an active credit note past its expiry date expires")
        return replace(self, status=Status.EXPIRED)


# --- list filters ---


class CreatedWithin(StrEnum):
    TODAY = "today"
    THIS_WEEK = "this_week"
    THIS_MONTH = "this_month"
    CUSTOM = "custom"


class RemainingFilter(StrEnum):
    FULLY_USED = "fully_used"
    PARTIAL = "partial"
    FULL = "full"


def created_range(
    within: CreatedWithin, *, now: datetime, zone: tzinfo, date_from: date | None = None, date_to: date | None = None
) -> tuple[datetime, datetime]:
    """[start, end) of a created-date filter, in the utility's time zone; weeks start on Monday."""
    today = now.astimezone(zone).date()
    if within is CreatedWithin.TODAY:
        first, last = today, today
    elif within is CreatedWithin.THIS_WEEK:
        first, last = today - timedelta(days=today.weekday()), today
    elif within is CreatedWithin.THIS_MONTH:
        first, last = today.replace(day=1), today
    else:
        if date_from is None:
            raise Rejected("created_from_required", "a custom range needs a From date", field="created_from")
        if date_to is None:
            raise Rejected("created_to_required", "a custom range needs a To date", field="created_to")
        if date_from > date_to:
            raise Rejected("created_range_reversed", "From must not be after To", field="created_from")
        first, last = date_from, date_to
    start = datetime.combine(first, time.min, tzinfo=zone)
    end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=zone)
    return start, end


def validate_amount_range(minimum: Decimal | None, maximum: Decimal | None) -> None:
    for value, field in ((minimum, "amount_min"), (maximum, "amount_max")):
        if value is not None and (not value.is_finite() or value < 0):
            raise Rejected("amount_range_invalid", "amounts must be numbers of at least 0", field=field)
    if minimum is not None and maximum is not None and minimum > maximum:
        raise Rejected("amount_range_reversed", "the minimum must not exceed the maximum", field="amount_min")
