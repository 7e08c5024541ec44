"""Pure KPI rules: periods, the four header KPIs, period-over-period change, and alert crossings. No I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

from shared.errors import Rejected

SOURCE = "kpi"  # the `source` of every event kpi publishes
_PERIOD = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")
HUNDRED = Decimal(100)
# Rates, percentages and day averages are shown with two decimals, rounded like money (banker's rounding).
TWO_PLACES = Decimal("0.01")

# A payment posted with this verification (not its status) waits for a staff member: the verification backlog.
# Which statuses count as collected is the one rule in shared.contracts (`counts_as_collected`).
PENDING_VERIFICATION = "Pending"


class CountedEvent(StrEnum):
    """The happenings counted per local day (`daily_events`): failures, cancellations, refunds, credit notes."""

    ONLINE_PAYMENTS_FAILED = "online_payments_failed"
    PAYMENTS_CANCELLED = "payments_cancelled"
    PAYMENTS_REFUNDED = "payments_refunded"
    CREDIT_NOTES_ISSUED = "credit_notes_issued"
    CREDIT_NOTES_APPLIED = "credit_notes_applied"
    CREDIT_NOTES_EXPIRED = "credit_notes_expired"
    CREDIT_NOTES_VOIDED = "credit_notes_voided"
    CREDIT_NOTES_REFUNDED = "credit_notes_refunded"
    PAYMENTS_PARTIALLY_REFUNDED = "payments_partially_refunded"
    PAYMENTS_CHARGED_BACK = "payments_charged_back"
    PAYMENTS_ADJUSTED = "payments_adjusted"
    DISPUTES_OPENED = "disputes_opened"
    DISPUTES_WON = "disputes_won"
    DISPUTES_LOST = "disputes_lost"
    PLAN_PAYMENTS_RECOVERED = "plan_payments_recovered"  # money an arrangement received (by payment date)
    INSTALLMENTS_MISSED = "installments_missed"  # by the day collections found them missed


def month_bounds(period: str) -> tuple[date, date]:
    """First day of the month `YYYY-MM` and first day of the next month."""
    match = _PERIOD.fullmatch(period)
    if match is None or not 1 <= int(match.group(1)) <= 9998:
        raise Rejected("invalid_period", "period must be YYYY-MM", field="period")
    year, month = int(match.group(1)), int(match.group(2))
    start = date(year, month, 1)
    end = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    return start, end


def period_of(day: date) -> str:
    """The `YYYY-MM` period a day belongs to."""
    return f"{day.year:04d}-{day.month:02d}"


def previous_period(period: str) -> str:
    """The month before `YYYY-MM` (the comparison period of every KPI)."""
    start, _ = month_bounds(period)
    return period_of(start - timedelta(days=1))


def local_day(moment: datetime, time_zone: ZoneInfo) -> date:
    """The utility's calendar day of an instant: what "today" means on its counters."""
    return moment.astimezone(time_zone).date()


def hour_window(moment: datetime) -> datetime:
    """Start of the UTC hour an instant falls in (hourly alert windows)."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hour_window_label(start: datetime) -> str:
    """ISO 8601 interval of one hour, e.g. `2025-04-20T10:00Z/PT1H`."""
    return f"{start.astimezone(UTC):%Y-%m-%dT%H:%MZ}/PT1H"


def _two_places(value: Decimal) -> Decimal:
    return value.quantize(TWO_PLACES, rounding=ROUND_HALF_EVEN)


def collection_rate(collected: Decimal, due: Decimal) -> Decimal | None:
    """Total collected / total due x 100, two decimals; None when nothing was due (no rate exists)."""
    if due <= 0:
        return None
    return _two_places(collected / due * HUNDRED)


def average_days(total_days: int, payments: int) -> Decimal | None:
    """Mean days from issue to payment, two decimals; None when no payment had an issue date."""
    if payments <= 0:
        return None
    return _two_places(Decimal(total_days) / Decimal(payments))


def days_to_collect(issued_on: date | None, payment_date: date) -> int | None:
    """Days between the bill or service being generated and the payment; None when the issue date is unknown."""
    if issued_on is None:
        return None
    return max((payment_date - issued_on).days, 0)


def percent_change(current: Decimal | None, previous: Decimal | None) -> Decimal | None:
    """(current - previous) / previous x 100, two decimals; None when there is nothing to compare with."""
    if current is None or previous is None or previous == 0:
        return None
    return _two_places((current - previous) / abs(previous) * HUNDRED)


# --- alerts ---


class Metric(StrEnum):
    COLLECTION_RATE = "collection_rate"
    FAILED_ONLINE_PAYMENTS_PER_HOUR = "failed_online_payments_per_hour"
    PENDING_VERIFICATIONS = "pending_verifications"
    MISSED_INSTALLMENTS_PER_DAY = "missed_installments_per_day"


class Comparison(StrEnum):
    BELOW = "below"
    ABOVE = "above"


@dataclass(frozen=True)
class AlertRule:
    """A threshold a billing manager set: raise when `metric` is `comparison` `threshold`."""

    alert_id: str
    metric: Metric
    comparison: Comparison
    threshold: Decimal

    def breached_by(self, value: Decimal | None) -> bool:
        """Whether a measured value is on the wrong side of the threshold (no value is never a breach)."""
        if value is None:
            return False
        if self.comparison is Comparison.BELOW:
            return value < self.threshold
        return value > self.threshold


def validate_rule(metric: Metric, comparison: Comparison, threshold: Decimal) -> None:
    """Reject thresholds that can never mean anything for their metric."""
    if not threshold.is_finite():
        raise Rejected("invalid_threshold", "threshold must be a finite number", field="threshold")
    if threshold < 0:
        raise Rejected("invalid_threshold", "threshold cannot be negative", field="threshold")
    if metric is Metric.COLLECTION_RATE and threshold > HUNDRED:
        raise Rejected("invalid_threshold", "a collection rate threshold is a percentage, 0 to 100", field="threshold")
    if metric is not Metric.COLLECTION_RATE and threshold != threshold.to_integral_value():
        raise Rejected("invalid_threshold", f"{metric} is a count: use a whole number", field="threshold")


def should_raise(was_breached: bool, breached_now: bool) -> bool:
    """Raise once per crossing: only when the value moves from the right side of the threshold to the wrong one."""
    return breached_now and not was_breached


# --- the daily reconciliation summary (from reconciliation.events.v1) ---

# The exception queue's age columns, as reconciliation shows them.
EXCEPTION_AGE_BUCKETS: tuple[tuple[str, int], ...] = (("0-1d", 1), ("2-7d", 7), ("8-30d", 30))


def exception_age_bucket(raised_at: datetime, at: datetime) -> str:
    days = (at - raised_at).days
    for name, limit in EXCEPTION_AGE_BUCKETS:
        if days <= limit:
            return name
    return ">30d"


def statement_line_count(line_ids: list[str]) -> int:
    """How many of these bank lines came in imported statements (what `statement.imported` counted): a line a
    bank pushed (`PL-...`) and a part of a split line (`<line>/<n>`; the split counts its line) are not."""
    return sum(1 for line_id in line_ids if not line_id.startswith("PL-") and "/" not in line_id)


@dataclass(frozen=True)
class ReconciliationDay:
    """Where reconciliation stands at the end of a day: every imported line so far, how many are reconciled
    (matched, recognised as fees, split or ignored), the amount still to reconcile, and the open exceptions."""

    day: date
    currency: str
    lines: int
    lines_reconciled: int
    amount_imported: Decimal
    amount_reconciled: Decimal
    exceptions_by_age: dict[str, int]
    lines_imported_that_day: int = 0
    lines_reconciled_that_day: int = 0
    exceptions_raised_that_day: int = 0
    exceptions_resolved_that_day: int = 0

    @property
    def matched_percent(self) -> Decimal:
        """One decimal, like reconciliation's own summary; 100 when there is nothing to reconcile."""
        if not self.lines:
            return Decimal("100.0")
        return (Decimal(self.lines_reconciled) * HUNDRED / Decimal(self.lines)).quantize(Decimal("0.1"))

    @property
    def amount_unreconciled(self) -> Decimal:
        return self.amount_imported - self.amount_reconciled


# --- payment arrangements (collections.events.v1) ---

# Collections publishes an arrangement's installments on billing's topic so payments offers them; they re-state
# bills already counted as due, so kpi counts them no more.
COLLECTIONS_SOURCE = "collections"


class PlanOutcome(StrEnum):
    """How an arrangement's installment turned out, counted on its due date (payment plan compliance)."""

    KEPT = "kept"  # paid in full by its due date plus grace
    LATE = "late"  # paid in full, after the grace
    MISSED = "missed"  # collections found it unpaid after its grace (paying it later does not make it kept)


def installment_outcome(
    *, amount: Decimal, paid: Decimal, settled_on: date | None, due_date: date, grace_days: int, missed: bool
) -> PlanOutcome | None:
    """The installment's outcome so far; None while it is neither paid in full nor missed."""
    if missed:
        return PlanOutcome.MISSED
    if paid < amount or settled_on is None:
        return None
    return PlanOutcome.KEPT if settled_on <= due_date + timedelta(days=grace_days) else PlanOutcome.LATE


def plan_compliance(kept: int, late: int, missed: int) -> Decimal | None:
    """Installments kept / installments decided (kept, late or missed) x 100, two decimals; None if none is."""
    decided = kept + late + missed
    if decided <= 0:
        return None
    return _two_places(Decimal(kept) / Decimal(decided) * HUNDRED)


# --- billing's items a batch at a time ---


@dataclass(frozen=True, slots=True)
class StoredDue:
    """What kpi keeps of one receivable item: when it falls due and how much (`receivables`)."""

    due_date: date
    amount: Decimal
    currency: str


# A `daily_dues` row: due date, currency, item type.
DuesKey = tuple[date, str, str]
ItemKey = tuple[str, str]  # payment type, item reference


@dataclass
class DuesMoves:
    """What a run of issued items changes: each item's stored due as it ends, and what moves between due days."""

    stored: dict[ItemKey, StoredDue]
    # Items and money added to (or taken from) each day, in the order first touched; a day an item passed through
    # nets to zero but is still there, because one event at a time creates its row too.
    moves: dict[DuesKey, tuple[int, Decimal]]
    # Each move in the order one event at a time makes it: after each, that day's period is checked for alerts.
    steps: list[tuple[DuesKey, int, Decimal]]


def fold_dues(earlier: dict[ItemKey, StoredDue], issued: list[tuple[ItemKey, StoredDue]]) -> DuesMoves:
    """Issue the items in order over what was stored before, as one event at a time would: an item issued again
    as it stands changes nothing; a re-issued one leaves its old due day (its currency stays the first one's,
    as the row keeps it) and joins its new one."""
    stored: dict[ItemKey, StoredDue] = {}
    moves: dict[DuesKey, tuple[int, Decimal]] = {}
    steps: list[tuple[DuesKey, int, Decimal]] = []

    def move(key: DuesKey, items: int, amount: Decimal) -> None:
        count, total = moves.get(key, (0, Decimal(0)))
        moves[key] = (count + items, total + amount)
        steps.append((key, items, amount))

    for key, due in issued:
        before = stored.get(key, earlier.get(key))
        if before == due:
            continue
        if before is not None:
            move((before.due_date, before.currency, key[0]), -1, -before.amount)
        move((due.due_date, due.currency, key[0]), 1, due.amount)
        stored[key] = due if before is None else StoredDue(due.due_date, due.amount, before.currency)
    return DuesMoves(stored, moves, steps)
