"""Collections' pure rules: schedules (property-based), compliance, aging, disconnection, promises."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.collections import domain
from services.collections.domain import (
    ArrangementPosition,
    ArrangementStatus,
    Disconnection,
    Frequency,
    InstallmentState,
    Outcome,
    Terms,
)
from shared.errors import Conflict, Rejected

D = Decimal
TODAY = date(2025, 4, 20)

amounts = st.decimals(min_value=D("0.01"), max_value=D("250000.00"), places=2)
counts = st.integers(min_value=1, max_value=domain.MAX_INSTALLMENTS)
frequencies = st.sampled_from(list(Frequency))
first_dates = st.dates(min_value=date(2024, 1, 1), max_value=date(2030, 12, 31))


@st.composite
def terms(draw: st.DrawFn) -> Terms:
    count = draw(counts)
    rest = draw(st.decimals(min_value=D("0.01") * count, max_value=D("250000.00"), places=2))
    down = draw(st.one_of(st.just(D("0.00")), st.decimals(min_value=D("0.01"), max_value=D("5000.00"), places=2)))
    return Terms(
        total=rest + down,
        installments=count,
        frequency=draw(frequencies),
        first_due_date=draw(first_dates),
        grace_days=draw(st.integers(0, 30)),
        down_payment=down,
    )


class TestSchedule:
    @given(terms())
    def test_installments_always_sum_to_the_total(self, agreed: Terms) -> None:
        """INVARIANT: a schedule never asks for a cent more or less than what was agreed."""
        assert sum(i.amount for i in agreed.schedule()) == agreed.total

    @given(terms())
    def test_no_installment_is_zero_or_negative(self, agreed: Terms) -> None:
        assert all(i.amount >= D("0.01") for i in agreed.schedule())

    @given(terms())
    def test_the_remainder_goes_on_the_last_installment(self, agreed: Terms) -> None:
        regular = [i for i in agreed.schedule() if not i.down_payment]
        assert len(regular) == agreed.installments
        assert len({i.amount for i in regular[:-1]}) <= 1
        assert regular[-1].amount >= regular[0].amount
        assert regular[-1].amount - regular[0].amount < D("0.01") * agreed.installments

    @given(terms())
    def test_dates_follow_the_frequency_and_never_fall_before_the_first_due_date(self, agreed: Terms) -> None:
        dates = [i.due_date for i in agreed.schedule()]
        assert dates[0] == agreed.first_due_date
        assert all(d >= agreed.first_due_date for d in dates)
        assert dates == sorted(set(dates))
        for k, due in enumerate(dates):
            if agreed.frequency is Frequency.WEEKLY:
                assert due == agreed.first_due_date + timedelta(days=7 * k)
            elif agreed.frequency is Frequency.FORTNIGHTLY:
                assert due == agreed.first_due_date + timedelta(days=14 * k)
            else:
                months = (due.year - agreed.first_due_date.year) * 12 + due.month - agreed.first_due_date.month
                assert months == k
                assert due.day == agreed.first_due_date.day or due.day < agreed.first_due_date.day

    @given(terms())
    def test_numbers_run_from_one_without_gaps(self, agreed: Terms) -> None:
        assert [i.number for i in agreed.schedule()] == list(range(1, len(agreed.schedule()) + 1))

    def test_monthly_from_the_31st_keeps_to_the_months_last_day(self) -> None:
        assert domain.due_dates(date(2025, 1, 31), 4, Frequency.MONTHLY) == [
            date(2025, 1, 31),
            date(2025, 2, 28),
            date(2025, 3, 31),
            date(2025, 4, 30),
        ]

    def test_a_split_puts_the_remainder_on_the_last(self) -> None:
        assert domain.split_amount(D("100.00"), 3) == [D("33.33"), D("33.33"), D("33.34")]

    def test_the_down_payment_is_the_first_installment_on_the_first_due_date(self) -> None:
        schedule = Terms(D("400.00"), 3, Frequency.MONTHLY, date(2025, 5, 1), down_payment=D("100.00")).schedule()
        assert [(i.number, i.amount, i.due_date, i.down_payment) for i in schedule] == [
            (1, D("100.00"), date(2025, 5, 1), True),
            (2, D("100.00"), date(2025, 6, 1), False),
            (3, D("100.00"), date(2025, 7, 1), False),
            (4, D("100.00"), date(2025, 8, 1), False),
        ]


class TestValidation:
    def valid(self, **changes: object) -> Terms:
        base = {
            "total": D("300.00"),
            "installments": 3,
            "frequency": Frequency.MONTHLY,
            "first_due_date": TODAY,
            "grace_days": 5,
        }
        return Terms(**(base | changes))  # type: ignore[arg-type]

    def field_of(self, agreed: Terms, owed: Decimal = D("300.00")) -> str | None:
        with pytest.raises(Rejected) as raised:
            domain.validate_terms(agreed, today=TODAY, owed=owed, limits=domain.Limits())
        return raised.value.field

    def test_installments_that_do_not_divide_name_the_installments(self) -> None:
        assert self.field_of(self.valid(total=D("0.02"), installments=3), owed=D("0.02")) == "installments"

    def test_a_first_due_date_in_the_past_names_it(self) -> None:
        assert self.field_of(self.valid(first_due_date=TODAY - timedelta(days=1))) == "first_due_date"

    def test_nothing_overdue_names_the_account(self) -> None:
        assert self.field_of(self.valid(), owed=D("0")) == "account_number"

    def test_a_down_payment_of_everything_names_it(self) -> None:
        assert self.field_of(self.valid(down_payment=D("300.00"))) == "down_payment"

    def test_grace_beyond_the_limit_names_it(self) -> None:
        assert self.field_of(self.valid(grace_days=31)) == "grace_days"

    def test_sound_terms_pass(self) -> None:
        domain.validate_terms(self.valid(), today=TODAY, owed=D("300.00"), limits=domain.Limits())

    def test_approval_above_the_total_or_the_count(self) -> None:
        limits = domain.Limits(approval_total=D("1000.00"), approval_installments=6)
        assert not domain.needs_approval(self.valid(total=D("1000.00"), installments=6), limits)
        assert domain.needs_approval(self.valid(total=D("1000.01")), limits)
        assert domain.needs_approval(self.valid(installments=7), limits)

    def test_explicit_amounts_must_add_up_to_the_remaining(self) -> None:
        domain.validate_amounts([D("50.00"), D("50.00")], D("100.00"))
        for bad in ([D("50.00"), D("49.99")], [D("100.00"), D("0")], []):
            with pytest.raises(Rejected) as raised:
                domain.validate_amounts(bad, D("100.00"))
            assert raised.value.field == "amounts"


def installment(paid: str = "0", paid_on: date | None = None, due: date = date(2025, 5, 1)) -> InstallmentState:
    return InstallmentState(number=1, amount=D("100.00"), due_date=due, paid=D(paid), paid_on=paid_on)


class TestCompliance:
    def test_paid_by_the_due_date_is_on_time(self) -> None:
        assert domain.evaluate(installment("100", date(2025, 5, 1)), grace_days=5, today=TODAY) is Outcome.ON_TIME

    def test_paid_after_the_due_date_within_grace_is_late_within_grace(self) -> None:
        outcome = domain.evaluate(installment("100", date(2025, 5, 6)), grace_days=5, today=date(2025, 5, 7))
        assert outcome is Outcome.LATE_WITHIN_GRACE

    def test_unpaid_after_grace_is_missed(self) -> None:
        assert domain.evaluate(installment(), grace_days=5, today=date(2025, 5, 6)) is Outcome.IN_GRACE
        assert domain.evaluate(installment(), grace_days=5, today=date(2025, 5, 7)) is Outcome.MISSED
        assert domain.missed_on(installment(), 5) == date(2025, 5, 7)

    def test_partly_paid_after_grace_is_missed(self) -> None:
        assert domain.evaluate(installment("99.99"), grace_days=0, today=date(2025, 5, 2)) is Outcome.MISSED

    def test_paid_after_grace_was_missed_first(self) -> None:
        outcome = domain.evaluate(installment("100", date(2025, 5, 20)), grace_days=5, today=date(2025, 5, 20))
        assert outcome is Outcome.PAID_AFTER_MISSED

    def test_not_due_yet_is_upcoming(self) -> None:
        assert domain.evaluate(installment(), grace_days=0, today=date(2025, 5, 1)) is Outcome.UPCOMING

    def test_the_next_installment_is_the_earliest_still_owed(self) -> None:
        paid = InstallmentState(1, D("10"), date(2025, 5, 1), paid=D("10"), paid_on=date(2025, 5, 1))
        missed = InstallmentState(2, D("10"), date(2025, 6, 1))
        upcoming = InstallmentState(3, D("10"), date(2025, 7, 1))
        replaced = InstallmentState(4, D("10"), date(2025, 5, 15), superseded=True)
        today = date(2025, 6, 20)
        schedule = [(s, domain.evaluate(s, grace_days=5, today=today)) for s in (upcoming, replaced, missed, paid)]
        assert domain.next_due(schedule) == missed
        assert domain.next_due([(s, o) for s, o in schedule if s is not missed]) == upcoming
        assert domain.next_due([(paid, Outcome.ON_TIME), (replaced, Outcome.SUPERSEDED)]) is None

    @given(st.lists(st.tuples(st.dates(), st.booleans()), max_size=12), st.dates())
    def test_the_next_installment_is_never_paid_or_superseded_and_none_owed_is_earlier(
        self, shapes: list[tuple[date, bool]], today: date
    ) -> None:
        schedule = []
        for n, (due, paid) in enumerate(shapes, start=1):
            state = InstallmentState(n, D("10"), due, paid=D("10") if paid else D("0"), paid_on=due if paid else None)
            schedule.append((state, domain.evaluate(state, grace_days=3, today=today)))
        chosen = domain.next_due(schedule)
        owed = [s for s, o in schedule if o in domain.STILL_OWED]
        if chosen is None:
            assert owed == []
        else:
            assert chosen.unpaid > 0 and not chosen.superseded
            assert all((chosen.due_date, chosen.number) <= (s.due_date, s.number) for s in owed)

    def test_broken_after_the_configured_number_of_misses(self) -> None:
        assert not domain.should_break(1, 2)
        assert domain.should_break(2, 2)

    def test_a_payment_goes_to_the_installment_it_names_then_to_the_earliest_unpaid(self) -> None:
        schedule = [
            InstallmentState(n, D("100.00"), date(2025, 5, n), paid=D("100.00") if n == 1 else D("0"))
            for n in (1, 2, 3)
        ]
        assert domain.allocate(schedule, D("150.00"), first=3) == [(3, D("100.00")), (2, D("50.00"))]
        assert domain.allocate(schedule, D("150.00"), first=1) == [(2, D("100.00")), (3, D("50.00"))]
        assert domain.allocate(schedule, D("500.00"), first=None) == [(2, D("100.00")), (3, D("100.00"))]

    def test_completed_when_every_live_installment_is_paid(self) -> None:
        paid = InstallmentState(1, D("10"), TODAY, paid=D("10"), paid_on=TODAY)
        superseded = InstallmentState(2, D("10"), TODAY, superseded=True)
        assert domain.is_completed([paid, superseded])
        assert not domain.is_completed([paid, InstallmentState(3, D("10"), TODAY)])

    def test_only_an_active_arrangement_is_modified(self) -> None:
        domain.check_can_modify(ArrangementStatus.ACTIVE)
        with pytest.raises(Conflict):
            domain.check_can_modify(ArrangementStatus.BROKEN)
        with pytest.raises(Conflict):
            domain.check_can_cancel(ArrangementStatus.COMPLETED)
        domain.check_can_reage(ArrangementStatus.BROKEN)


class TestDelinquency:
    def test_items_past_due_are_overdue_and_the_next_change_is_the_day_after_a_due_date(self) -> None:
        items = [
            domain.OpenItem(D("100"), D("0"), date(2025, 3, 1)),
            domain.OpenItem(D("50"), D("20"), date(2025, 4, 1)),
            domain.OpenItem(D("70"), D("0"), date(2025, 5, 1)),
        ]
        result = domain.delinquency(items, None, TODAY)
        assert (result.amount_owed, result.amount_overdue) == (D("200.00"), D("130.00"))
        assert result.oldest_overdue_due == date(2025, 3, 1)
        assert result.next_change_on == date(2025, 5, 2)

    def test_an_active_plan_counts_its_installments_past_due_only(self) -> None:
        plan = ArrangementPosition(
            "PA-1",
            ArrangementStatus.ACTIVE,
            3,
            (
                InstallmentState(1, D("100"), date(2025, 4, 10), paid=D("100"), paid_on=date(2025, 4, 10)),
                InstallmentState(2, D("100"), date(2025, 4, 19)),
                InstallmentState(3, D("100"), date(2025, 5, 10)),
            ),
            D("300"),
            D("100"),
        )
        result = domain.delinquency([], plan, TODAY)
        assert (result.amount_owed, result.amount_overdue, result.oldest_overdue_due) == (
            D("200.00"),
            D("100.00"),
            date(2025, 4, 19),
        )
        assert result.next_change_on == date(2025, 4, 23)  # installment 2 is missed then

    def test_a_broken_plan_returns_its_whole_remaining_balance_to_arrears(self) -> None:
        plan = ArrangementPosition(
            "PA-1",
            ArrangementStatus.BROKEN,
            0,
            (InstallmentState(1, D("100"), date(2025, 4, 1)), InstallmentState(2, D("100"), date(2025, 5, 1))),
            D("200"),
            D("0"),
            lapsed_on=date(2025, 4, 5),
        )
        result = domain.delinquency([], plan, TODAY)
        assert (result.amount_overdue, result.oldest_overdue_due) == (D("200.00"), date(2025, 4, 1))

    @pytest.mark.parametrize(
        ("days", "bucket"), [(0, "0-30"), (30, "0-30"), (31, "31-60"), (60, "31-60"), (61, "61-90"), (91, "90+")]
    )
    def test_aging_buckets(self, days: int, bucket: str) -> None:
        assert domain.aging_bucket(days).value == bucket
        earliest, latest = domain.bucket_due_range(domain.aging_bucket(days), TODAY)
        if days:
            oldest = TODAY - timedelta(days=days)
            assert oldest <= latest
            assert earliest is None or oldest >= earliest


class TestDisconnection:
    policy = domain.DisconnectionPolicy(threshold_days=60, threshold_amount=D("50"))

    def test_a_kept_arrangement_holds(self) -> None:
        state, reason = domain.disconnection_answer(ArrangementStatus.ACTIVE, "PA-1", D("500"), 200, self.policy)
        assert state is Disconnection.HOLD
        assert "PA-1" in reason

    def test_a_broken_arrangement_with_arrears_is_eligible(self) -> None:
        state, _ = domain.disconnection_answer(ArrangementStatus.BROKEN, "PA-1", D("10"), 1, self.policy)
        assert state is Disconnection.ELIGIBLE

    def test_no_plan_past_the_threshold_is_eligible_and_below_it_is_clear(self) -> None:
        assert domain.disconnection_answer(None, None, D("50"), 60, self.policy)[0] is Disconnection.ELIGIBLE
        assert domain.disconnection_answer(None, None, D("50"), 59, self.policy)[0] is Disconnection.CLEAR
        assert domain.disconnection_answer(None, None, D("49.99"), 90, self.policy)[0] is Disconnection.CLEAR


class TestPromises:
    def test_kept_broken_open(self) -> None:
        assert domain.promise_status(D("50"), D("50"), TODAY, TODAY) is domain.PromiseStatus.KEPT
        assert domain.promise_status(D("50"), D("10"), TODAY, TODAY) is domain.PromiseStatus.OPEN
        assert domain.promise_status(D("50"), D("10"), TODAY, TODAY + timedelta(days=1)) is domain.PromiseStatus.BROKEN

    def test_a_promise_needs_an_amount_and_a_date_not_in_the_past(self) -> None:
        kind = domain.ActivityKind.PROMISE_TO_PAY
        for amount, day, field in (
            (None, TODAY, "promise_amount"),
            (D("5"), None, "promise_date"),
            (D("5"), TODAY - timedelta(days=1), "promise_date"),
        ):
            with pytest.raises(Rejected) as raised:
                domain.validate_activity(kind, promise_amount=amount, promise_date=day, follow_up_on=None, today=TODAY)
            assert raised.value.field == field
