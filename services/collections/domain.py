"""Collections' pure rules: schedules, compliance, aging, the disconnection answer, promises. No I/O."""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_DOWN, Decimal
from enum import StrEnum

from shared.errors import Conflict, Rejected

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
SYSTEM = "system"
MAX_INSTALLMENTS = 120


class Frequency(StrEnum):
    WEEKLY = "weekly"
    FORTNIGHTLY = "fortnightly"
    MONTHLY = "monthly"


class ArrangementStatus(StrEnum):
    PENDING_APPROVAL = "Pending approval"
    ACTIVE = "Active"
    COMPLETED = "Completed"
    BROKEN = "Broken"
    CANCELLED = "Cancelled"
    REJECTED = "Rejected"
    REAGED = "Re-aged"


# An account has at most one arrangement in one of these at a time.
OPEN_STATUSES = (ArrangementStatus.PENDING_APPROVAL, ArrangementStatus.ACTIVE)
# Whose remaining balance is arrears again.
LAPSED_STATUSES = (ArrangementStatus.BROKEN, ArrangementStatus.CANCELLED)


class Outcome(StrEnum):
    """How one installment fared against its due date and grace."""

    UPCOMING = "upcoming"  # not due yet, not paid
    IN_GRACE = "in_grace"  # past due, unpaid, still within grace
    ON_TIME = "on_time"  # paid in full by the due date
    LATE_WITHIN_GRACE = "late_within_grace"  # paid in full after the due date, within grace
    MISSED = "missed"  # not paid in full by the end of grace
    PAID_AFTER_MISSED = "paid_after_missed"  # paid in full, but after grace (it was missed first)
    SUPERSEDED = "superseded"  # replaced by a modified schedule before it was paid


KEPT = (Outcome.ON_TIME, Outcome.LATE_WITHIN_GRACE)


def cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT)


# --- schedules ---


def add_months(start: date, months: int) -> date:
    """`start` plus whole months, on the same day of the month or the month's last day if it is shorter."""
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def due_dates(first: date, count: int, frequency: Frequency) -> list[date]:
    """`count` due dates from `first`, one period apart (monthly ones anchored on the first date's day)."""
    if frequency is Frequency.MONTHLY:
        return [add_months(first, k) for k in range(count)]
    step = timedelta(days=7 if frequency is Frequency.WEEKLY else 14)
    return [first + step * k for k in range(count)]


def split_amount(total: Decimal, count: int) -> list[Decimal]:
    """`total` in `count` installments of whole cents: equal ones, the remainder on the last."""
    if count < 1:
        raise Rejected("installments_too_few", "there is at least one installment", field="installments")
    total = cents(total)
    if total < CENT * count:
        raise Rejected(
            "installments_do_not_divide",
            f"{total} cannot be split into {count} installments of at least 0.01",
            field="installments",
        )
    base = (total / count).quantize(CENT, rounding=ROUND_DOWN)
    return [base] * (count - 1) + [total - base * (count - 1)]


@dataclass(frozen=True)
class ScheduledInstallment:
    number: int
    amount: Decimal
    due_date: date
    down_payment: bool = False


@dataclass(frozen=True)
class Terms:
    """What a recovery executive agreed with the customer."""

    total: Decimal
    installments: int
    frequency: Frequency
    first_due_date: date
    grace_days: int = 0
    down_payment: Decimal = ZERO

    def schedule(self, *, first_number: int = 1) -> list[ScheduledInstallment]:
        """The down payment (if any) on the first due date, then the installments one period apart after it."""
        rest = cents(self.total - self.down_payment)
        schedule: list[ScheduledInstallment] = []
        if self.down_payment > 0:
            schedule.append(ScheduledInstallment(first_number, cents(self.down_payment), self.first_due_date, True))
            dates = due_dates(self.first_due_date, self.installments + 1, self.frequency)[1:]
        else:
            dates = due_dates(self.first_due_date, self.installments, self.frequency)
        start = first_number + len(schedule)
        for offset, (amount, due) in enumerate(zip(split_amount(rest, self.installments), dates, strict=True)):
            schedule.append(ScheduledInstallment(start + offset, amount, due))
        return schedule


@dataclass(frozen=True)
class Limits:
    """Settings that bound what an executive may agree alone."""

    approval_total: Decimal = Decimal("5000.00")
    approval_installments: int = 12
    max_grace_days: int = 30


def validate_terms(terms: Terms, *, today: date, owed: Decimal, limits: Limits) -> None:
    """Reject terms that cannot make a sound schedule, naming the field at fault."""
    if owed <= 0:
        raise Rejected("nothing_overdue", "the account has nothing overdue to arrange", field="account_number")
    if terms.installments < 1 or terms.installments > MAX_INSTALLMENTS:
        raise Rejected(
            "installments_out_of_range", f"installments is between 1 and {MAX_INSTALLMENTS}", field="installments"
        )
    if terms.first_due_date < today:
        raise Rejected(
            "first_due_date_in_past", f"the first due date is before today ({today})", field="first_due_date"
        )
    if not 0 <= terms.grace_days <= limits.max_grace_days:
        raise Rejected("grace_days_out_of_range", f"grace days is 0 to {limits.max_grace_days}", field="grace_days")
    if terms.down_payment < 0 or cents(terms.down_payment) != terms.down_payment:
        raise Rejected("down_payment_invalid", "the down payment is zero or more, in cents", field="down_payment")
    if terms.down_payment >= terms.total:
        raise Rejected(
            "down_payment_too_large",
            "the down payment must leave something to pay in installments",
            field="down_payment",
        )
    terms.schedule()  # raises `installments_do_not_divide` naming `installments`


def needs_approval(terms: Terms, limits: Limits) -> bool:
    """Above the configured total or installment count, a billing manager approves first."""
    return terms.total > limits.approval_total or terms.installments > limits.approval_installments


def plan_terms(terms: Terms) -> str:
    """The terms in one line, as the tracking plan's `plan_terms` property."""
    down = f"{terms.down_payment} down + " if terms.down_payment > 0 else ""
    return f"{down}{terms.installments} x {terms.frequency.value} from {terms.first_due_date.isoformat()}"


def risk_score(days_overdue: int, amount_overdue: Decimal, broken_before: int) -> int:
    """0 (low) to 100 (high): how likely this customer is to fall behind again; a simple, explainable blend."""
    days = min(days_overdue, 180) / 180 * 50
    amount = min(float(amount_overdue), 5000.0) / 5000 * 30
    history = min(broken_before, 2) * 10
    return round(days + amount + history)


def validate_amounts(amounts: Sequence[Decimal], remaining: Decimal) -> None:
    """Explicit installment amounts of a modified schedule: positive cents that add up to the remaining balance."""
    if not amounts:
        raise Rejected("amounts_empty", "give at least one amount", field="amounts")
    if any(a <= 0 or cents(a) != a for a in amounts):
        raise Rejected("amount_invalid", "each amount is positive, in cents", field="amounts")
    if sum(amounts, ZERO) != remaining:
        raise Rejected(
            "amounts_do_not_add_up", f"the amounts add up to {sum(amounts, ZERO)}, not {remaining}", field="amounts"
        )


# --- compliance ---


@dataclass(frozen=True)
class InstallmentState:
    number: int
    amount: Decimal
    due_date: date
    paid: Decimal = ZERO
    paid_on: date | None = None  # the day it was paid in full
    superseded: bool = False

    @property
    def unpaid(self) -> Decimal:
        return max(self.amount - self.paid, ZERO)


def evaluate(installment: InstallmentState, *, grace_days: int, today: date) -> Outcome:
    """On time, late within grace, missed, or not decided yet; `today` is the clock's date."""
    if installment.superseded and installment.unpaid > 0:
        return Outcome.SUPERSEDED
    end_of_grace = installment.due_date + timedelta(days=grace_days)
    if installment.unpaid == 0 and installment.paid_on is not None:
        if installment.paid_on <= installment.due_date:
            return Outcome.ON_TIME
        return Outcome.LATE_WITHIN_GRACE if installment.paid_on <= end_of_grace else Outcome.PAID_AFTER_MISSED
    if today <= installment.due_date:
        return Outcome.UPCOMING
    return Outcome.IN_GRACE if today <= end_of_grace else Outcome.MISSED


# Outcomes of an installment the customer still has to pay.
STILL_OWED = (Outcome.UPCOMING, Outcome.IN_GRACE, Outcome.MISSED)


def next_due(schedule: Sequence[tuple[InstallmentState, Outcome]]) -> InstallmentState | None:
    """The installment the customer should pay next: the earliest one still owed (missed ones first by date)."""
    owed = [state for state, outcome in schedule if outcome in STILL_OWED]
    return min(owed, key=lambda s: (s.due_date, s.number), default=None)


def missed_on(installment: InstallmentState, grace_days: int) -> date:
    """The first day an unpaid installment counts as missed."""
    return installment.due_date + timedelta(days=grace_days + 1)


def allocate(
    installments: Sequence[InstallmentState], amount: Decimal, *, first: int | None
) -> list[tuple[int, Decimal]]:
    """Spread a payment over a schedule: the installment it names first (`first`), then the earliest unpaid ones.

    A payment named for an installment already paid, or for none (a payment on a covered bill), starts at the
    earliest unpaid one. Whatever exceeds the schedule is not allocated (payments made it an overpayment).
    """
    open_ = [i for i in installments if i.unpaid > 0 and not i.superseded]
    open_.sort(key=lambda i: (i.number != first, i.due_date, i.number))
    left = amount
    shares: list[tuple[int, Decimal]] = []
    for installment in open_:
        if left <= 0:
            break
        share = min(left, installment.unpaid)
        shares.append((installment.number, share))
        left -= share
    return shares


def take_back(allocations: Sequence[tuple[int, Decimal]]) -> list[tuple[int, Decimal]]:
    """The negative shares that undo a reversed payment's allocations."""
    return [(number, -amount) for number, amount in allocations]


def should_break(missed: int, break_after: int) -> bool:
    """After N missed installments (a setting) the plan is Broken."""
    return missed >= break_after


def is_completed(installments: Sequence[InstallmentState]) -> bool:
    live = [i for i in installments if not i.superseded or i.paid > 0]
    return bool(live) and all(i.unpaid == 0 for i in live if not i.superseded)


# --- status changes allowed by hand ---


def check_can_modify(status: ArrangementStatus) -> None:
    if status is not ArrangementStatus.ACTIVE:
        raise Conflict("arrangement_not_active", f"only an Active arrangement can be modified; this one is {status}")


def check_can_cancel(status: ArrangementStatus) -> None:
    if status not in OPEN_STATUSES:
        raise Conflict("arrangement_closed", f"an arrangement that is {status} cannot be cancelled")


def check_can_reage(status: ArrangementStatus) -> None:
    if status not in (ArrangementStatus.ACTIVE, ArrangementStatus.BROKEN):
        raise Conflict("arrangement_not_reageable", f"only an Active or Broken arrangement is re-aged; not {status}")


# --- aging and the worklist ---


class AgingBucket(StrEnum):
    CURRENT_30 = "0-30"
    DAYS_31_60 = "31-60"
    DAYS_61_90 = "61-90"
    OVER_90 = "90+"


def aging_bucket(days_overdue: int) -> AgingBucket:
    if days_overdue <= 30:
        return AgingBucket.CURRENT_30
    if days_overdue <= 60:
        return AgingBucket.DAYS_31_60
    if days_overdue <= 90:
        return AgingBucket.DAYS_61_90
    return AgingBucket.OVER_90


def bucket_due_range(bucket: AgingBucket, today: date) -> tuple[date | None, date]:
    """The oldest-overdue due dates whose days overdue fall in `bucket`: (earliest or None, latest), inclusive."""
    low, high = {
        AgingBucket.CURRENT_30: (1, 30),
        AgingBucket.DAYS_31_60: (31, 60),
        AgingBucket.DAYS_61_90: (61, 90),
        AgingBucket.OVER_90: (91, None),
    }[bucket]
    latest = today - timedelta(days=low)
    earliest = today - timedelta(days=high) if high is not None else None
    return earliest, latest


def days_overdue(oldest_overdue_due: date | None, today: date) -> int:
    return max((today - oldest_overdue_due).days, 0) if oldest_overdue_due is not None else 0


@dataclass(frozen=True)
class OpenItem:
    amount: Decimal
    paid: Decimal
    due_date: date

    @property
    def owed(self) -> Decimal:
        return max(self.amount - self.paid, ZERO)


@dataclass(frozen=True)
class ArrangementPosition:
    """What an account's latest arrangement contributes to its worklist row."""

    arrangement_id: str
    status: ArrangementStatus
    grace_days: int
    installments: tuple[InstallmentState, ...]
    total: Decimal
    paid: Decimal
    lapsed_on: date | None = None  # when it broke or was cancelled

    @property
    def remaining(self) -> Decimal:
        return max(self.total - self.paid, ZERO)


@dataclass(frozen=True)
class Delinquency:
    amount_owed: Decimal
    amount_overdue: Decimal
    oldest_overdue_due: date | None
    next_change_on: date | None


def delinquency(items: Sequence[OpenItem], plan: ArrangementPosition | None, today: date) -> Delinquency:
    """What an account owes and since when, on `today`, and the next day that answer changes by time alone.

    Items an arrangement covers are counted through the arrangement: an Active one by its installments past due,
    a Broken or Cancelled one by its whole remaining balance (it returned to arrears).
    """
    owed = overdue = ZERO
    oldest: date | None = None
    upcoming: list[date] = []

    def add(amount: Decimal, due: date) -> None:
        nonlocal owed, overdue, oldest
        if amount <= 0:
            return
        owed += amount
        if due < today:
            overdue += amount
            oldest = due if oldest is None else min(oldest, due)
        else:
            upcoming.append(due + timedelta(days=1))

    for item in items:
        add(item.owed, item.due_date)
    if plan is not None:
        if plan.status in OPEN_STATUSES:
            for installment in plan.installments:
                if not installment.superseded:
                    add(installment.unpaid, installment.due_date)
                    if installment.unpaid > 0:
                        upcoming.append(missed_on(installment, plan.grace_days))
        elif plan.status in LAPSED_STATUSES:
            unpaid = [i for i in plan.installments if i.unpaid > 0 and not i.superseded]
            since = min((i.due_date for i in unpaid), default=plan.lapsed_on or today)
            add(plan.remaining, min(since, plan.lapsed_on or since))
    later = [d for d in upcoming if d > today]
    return Delinquency(cents(owed), cents(overdue), oldest, min(later) if later else None)


# --- disconnection ---


class Disconnection(StrEnum):
    HOLD = "hold"  # do not disconnect: an arrangement is being kept
    ELIGIBLE = "eligible"  # field operations may disconnect
    CLEAR = "clear"  # nothing to do either way


@dataclass(frozen=True)
class DisconnectionPolicy:
    threshold_days: int = 60
    threshold_amount: Decimal = Decimal("50.00")


def disconnection_answer(
    plan_status: ArrangementStatus | None,
    arrangement_id: str | None,
    amount_overdue: Decimal,
    days: int,
    policy: DisconnectionPolicy,
) -> tuple[Disconnection, str]:
    """The answer a field system gets, with the reason in words."""
    if plan_status is ArrangementStatus.ACTIVE:
        return Disconnection.HOLD, f"payment arrangement {arrangement_id} is being kept"
    if plan_status is ArrangementStatus.BROKEN and amount_overdue > 0:
        return Disconnection.ELIGIBLE, f"payment arrangement {arrangement_id} was broken"
    if plan_status is ArrangementStatus.PENDING_APPROVAL:
        return Disconnection.CLEAR, f"payment arrangement {arrangement_id} awaits approval"
    if amount_overdue >= policy.threshold_amount and days >= policy.threshold_days:
        return Disconnection.ELIGIBLE, f"{amount_overdue} overdue for {days} days with no payment arrangement"
    if amount_overdue > 0:
        return Disconnection.CLEAR, f"{amount_overdue} overdue for {days} days, below the disconnection threshold"
    return Disconnection.CLEAR, "nothing overdue"


# --- promises to pay ---


class ActivityKind(StrEnum):
    CALL = "call"
    VISIT = "visit"
    PROMISE_TO_PAY = "promise_to_pay"
    NOTE = "note"


CONTACTS = (ActivityKind.CALL, ActivityKind.VISIT, ActivityKind.PROMISE_TO_PAY)


class PromiseStatus(StrEnum):
    OPEN = "Open"
    KEPT = "Kept"
    BROKEN = "Broken"


def promise_status(amount: Decimal, paid: Decimal, promised_on: date, today: date) -> PromiseStatus:
    """Kept once payments since the promise reach its amount; broken if the promised date passed short of it."""
    if paid >= amount:
        return PromiseStatus.KEPT
    return PromiseStatus.BROKEN if today > promised_on else PromiseStatus.OPEN


def validate_activity(
    kind: ActivityKind,
    *,
    promise_amount: Decimal | None,
    promise_date: date | None,
    follow_up_on: date | None,
    today: date,
) -> None:
    if kind is ActivityKind.PROMISE_TO_PAY:
        if promise_amount is None or promise_amount <= 0:
            raise Rejected(
                "promise_amount_required", "a promise to pay names a positive amount", field="promise_amount"
            )
        if promise_date is None:
            raise Rejected("promise_date_required", "a promise to pay names a date", field="promise_date")
        if promise_date < today:
            raise Rejected("promise_date_in_past", "the promised date is before today", field="promise_date")
    elif promise_amount is not None or promise_date is not None:
        raise Rejected("not_a_promise", "only a promise to pay has an amount and a date", field="promise_amount")
    if follow_up_on is not None and follow_up_on < today:
        raise Rejected("follow_up_in_past", "the follow-up date is before today", field="follow_up_on")
