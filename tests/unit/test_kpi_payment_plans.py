"""kpi's pure rules for payment arrangements: an installment's outcome and payment plan compliance."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from services.kpi.domain import PlanOutcome, installment_outcome, plan_compliance

D = Decimal
DUE = date(2030, 3, 10)


def outcome(paid: str, settled_on: date | None, *, missed: bool = False, grace: int = 2) -> PlanOutcome | None:
    return installment_outcome(
        amount=D("100.00"), paid=D(paid), settled_on=settled_on, due_date=DUE, grace_days=grace, missed=missed
    )


class TestInstallmentOutcome:
    def test_paid_in_full_by_the_due_date_or_within_grace_is_kept(self) -> None:
        assert outcome("100.00", DUE) is PlanOutcome.KEPT
        assert outcome("100.00", DUE + timedelta(days=2)) is PlanOutcome.KEPT

    def test_paid_in_full_after_the_grace_is_late(self) -> None:
        assert outcome("100.00", DUE + timedelta(days=3)) is PlanOutcome.LATE

    def test_partly_paid_or_unpaid_is_undecided(self) -> None:
        assert outcome("99.99", None) is None
        assert outcome("0.00", None) is None

    def test_missed_stays_missed_even_once_paid(self) -> None:
        assert outcome("0.00", None, missed=True) is PlanOutcome.MISSED
        assert outcome("100.00", DUE, missed=True) is PlanOutcome.MISSED


class TestPlanCompliance:
    def test_kept_out_of_decided_two_decimals(self) -> None:
        assert plan_compliance(1, 1, 1) == D("33.33")
        assert plan_compliance(1, 0, 1) == D("50.00")
        assert plan_compliance(4, 0, 0) == D("100.00")

    def test_nothing_decided_has_no_rate(self) -> None:
        assert plan_compliance(0, 0, 0) is None

    @given(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(0, 10_000))
    def test_always_a_percentage(self, kept: int, late: int, missed: int) -> None:
        """INVARIANT: 0 to 100 whenever anything was decided; 100 only when nothing was late or missed."""
        rate = plan_compliance(kept, late, missed)
        if kept + late + missed == 0:
            assert rate is None
        else:
            assert rate is not None and D(0) <= rate <= D(100)
            assert (rate == 100) == (late + missed == 0) or (late + missed) * 20000 < kept + late + missed
