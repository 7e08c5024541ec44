"""Pure credit-note rules: numbering, limits, application, voiding, refunds, automatic application, status,
expiry and list filters. No I/O."""

from __future__ import annotations

import calendar
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from enum import StrEnum
from typing import Any

from shared.contracts import PaymentStatus, counts_as_collected
from shared.errors import Rejected
from shared.money import percentage

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
    VOIDED = "Voided"  # the money behind it went back (payment cancelled, refunded, dispute lost)
    REFUNDED = "Refunded"  # its unused balance is being paid back to the customer
    PENDING_APPROVAL = "Pending approval"  # a manual note above the limit, waiting for a billing manager
    REJECTED = "Rejected"  # a billing manager refused it; it never held credit


class AutoApply(StrEnum):
    """Whether available credit pays a newly issued bill by itself, and in which order."""

    OFF = "off"
    OLDEST_FIRST = "oldest_first"


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
    # Manual credit notes above this wait for a billing manager's approval (automatic ones never do).
    approval_limit: Decimal = Decimal("500.00")
    auto_apply_credit: AutoApply = AutoApply.OFF

    def __post_init__(self) -> None:
        if not self.approval_limit.is_finite() or self.approval_limit < 0:
            raise Rejected("approval_limit_invalid", "the approval limit is an amount of at least 0", field="limit")
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
        return {
            "expiry": {"count": self.expiry.count, "unit": self.expiry.unit.value},
            "reasons": list(self.reasons),
            "approval_limit": f"{self.approval_limit:.2f}",
            "auto_apply_credit": self.auto_apply_credit.value,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Policy:
        expiry = value["expiry"]
        defaults = cls()
        return cls(
            ExpiryPeriod(int(expiry["count"]), PeriodUnit(expiry["unit"])),
            tuple(value["reasons"]),
            approval_limit=Decimal(value.get("approval_limit", defaults.approval_limit)),
            auto_apply_credit=AutoApply(value.get("auto_apply_credit", defaults.auto_apply_credit)),
        )


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
    refunded: Decimal = ZERO

    @property
    def creditable(self) -> Decimal:
        """The most a new credit note on this payment may be: nothing unless its money was collected and stayed
        (a cancelled payment never happened, a refunded one went back to the customer)."""
        if not counts_as_collected(self.payment_status):
            return ZERO
        return max(self.amount - self.refunded - self.credited, ZERO)

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
                f"credit already issued {self.credited} and refunds {self.refunded})",
                field="amount",
            )
        return replace(self, credited=self.credited + amount)

    @property
    def remaining_value(self) -> Decimal:
        """What is left of the payment after every credit note; 0 means a full reversal."""
        return max(self.amount - self.refunded - self.credited, ZERO)


def has_two_decimals(amount: Decimal) -> bool:
    exponent = amount.as_tuple().exponent
    return isinstance(exponent, int) and exponent >= -2


# --- using a credit note ---


def usage_percentage(applied: Decimal, amount: Decimal) -> Decimal:
    """(Applied / Original) x 100: the house's one percentage rule (`shared.money.percentage`), as documents show it."""
    return percentage(applied, amount)


def status_for(remaining: Decimal, *, expired: bool = False) -> Status:
    """Active while something is left to use, Applied once used up (Voided and Refunded are set by their rule)."""
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
    # Given back because its money went back (unused credit voided, applications reversed), or paid out.
    voided: Decimal = ZERO
    refunded: Decimal = ZERO

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.applied - self.voided - self.refunded

    @property
    def available(self) -> Decimal:
        """Credit that can still be used: an active note's remaining balance, else nothing."""
        return self.remaining if self.status is Status.ACTIVE else ZERO

    def apply(self, amount: Decimal | None, *, item_outstanding: Decimal, now: datetime) -> tuple[CreditNote, Decimal]:
        """Use `amount` (default: as much as both allow) on an item owing `item_outstanding`."""
        if self.status is Status.EXPIRED or (self.status is Status.ACTIVE and now >= self.expires_at):
            raise Rejected("credit_note_expired", "this credit note has expired")
        if self.status not in (Status.ACTIVE, Status.APPLIED):
            code = "credit_note_" + self.status.value.lower().replace(" ", "_")
            raise Rejected(code, f"a {self.status.value.lower()} credit note cannot be applied")
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
        after = replace(self, applied=self.applied + amount)
        return replace(after, status=status_for(after.remaining)), amount

    def void(self, most: Decimal | None = None) -> tuple[CreditNote, Decimal]:
        """Give back up to `most` (None: all) of the unused balance; Voided once nothing is left of it."""
        if self.status in (Status.PENDING_APPROVAL, Status.REJECTED, Status.REFUNDED):
            return self, ZERO
        unused = max(self.remaining, ZERO)
        amount = unused if most is None else min(unused, max(most, ZERO))
        after = replace(self, voided=self.voided + amount)
        if after.remaining == 0 and (amount > 0 or most is None):
            after = replace(after, status=Status.VOIDED)
        return after, amount

    def reverse(self, amount: Decimal) -> CreditNote:
        """Take back `amount` of what was applied (the item is owed again); it does not become usable again."""
        if amount <= 0 or amount > self.applied:
            raise Rejected("reversal_exceeds_applied", f"cannot reverse {amount} of {self.applied} applied")
        after = replace(self, applied=self.applied - amount, voided=self.voided + amount)
        if after.remaining == 0 and after.status in (Status.ACTIVE, Status.APPLIED):
            after = replace(after, status=Status.VOIDED)
        return after

    def refund(self) -> tuple[CreditNote, Decimal]:
        """Pay the unused balance back to the customer: only an active note with something left."""
        if self.status is not Status.ACTIVE or self.remaining <= 0:
            raise Rejected(
                "credit_note_not_refundable", f"a {self.status.value.lower()} credit note has nothing to refund"
            )
        amount = self.remaining
        return replace(self, refunded=self.refunded + amount, status=Status.REFUNDED), amount

    def is_due_to_expire(self, now: datetime) -> bool:
        return self.status is Status.ACTIVE and now >= self.expires_at

    def expire(self, now: datetime) -> CreditNote:
        """An active note past its expiry date becomes Expired; its unused balance can no longer be applied."""
        if not self.is_due_to_expire(now):
            raise Rejected("not_due_to_expire", "only an active credit note past its expiry date expires")
        return replace(self, status=Status.EXPIRED)


# --- giving credit back when the money behind it went back ---


@dataclass(frozen=True)
class Application:
    """Credit applied to an item; `reversed` of it was taken back since."""

    application_id: str
    credit_note_number: str
    amount: Decimal
    applied_at: datetime
    reversed: Decimal = ZERO

    @property
    def standing(self) -> Decimal:
        return self.amount - self.reversed


@dataclass(frozen=True)
class NoteVoid:
    """What giving credit back does to one note: unused credit voided, applications reversed (id, amount)."""

    credit_note_number: str
    voided: Decimal
    reversed: tuple[tuple[str, Decimal], ...]
    after: CreditNote


def void_plan(
    notes: list[tuple[str, CreditNote]], applications: list[Application], most: Decimal | None
) -> list[NoteVoid]:
    """Give back up to `most` (None: everything) of a payment's credit: unused balances first, oldest note first;
    then credit already applied, latest application first (those items are owed again)."""
    left = most
    state = dict(notes)
    voided: dict[str, Decimal] = dict.fromkeys(state, ZERO)
    reversed_: dict[str, list[tuple[str, Decimal]]] = {n: [] for n in state}
    for number, _ in notes:
        after, amount = state[number].void(left)
        state[number], voided[number] = after, amount
        if left is not None:
            left -= amount
    for application in sorted(applications, key=lambda a: a.applied_at, reverse=True):
        if left is not None and left <= 0:
            break
        if application.standing <= 0 or application.credit_note_number not in state:
            continue
        amount = application.standing if left is None else min(application.standing, left)
        state[application.credit_note_number] = state[application.credit_note_number].reverse(amount)
        reversed_[application.credit_note_number].append((application.application_id, amount))
        if left is not None:
            left -= amount
    if most is None:
        # Everything went back: a note with nothing left is Voided even if it had been fully applied.
        for number, note in state.items():
            if note.status in (Status.ACTIVE, Status.APPLIED):
                state[number] = replace(note, status=Status.VOIDED)
    return [
        NoteVoid(number, voided[number], tuple(reversed_[number]), state[number])
        for number, _ in notes
        if voided[number] > 0 or reversed_[number] or state[number] != dict(notes)[number]
    ]


def oldest_first(
    notes: list[tuple[str, CreditNote]], item_outstanding: Decimal, now: datetime
) -> list[tuple[str, Decimal]]:
    """The automatic application to a new bill: usable credit, the note expiring first used first, up to what the
    bill owes. `notes` come oldest first; returns (credit-note number, amount) pairs."""
    plan: list[tuple[str, Decimal]] = []
    left = item_outstanding
    usable = [(n, c) for n, c in notes if c.status is Status.ACTIVE and c.remaining > 0 and now < c.expires_at]
    for number, note in sorted(usable, key=lambda pair: pair[1].expires_at):
        if left <= 0:
            break
        amount = min(note.remaining, left)
        plan.append((number, amount))
        left -= amount
    return plan


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
