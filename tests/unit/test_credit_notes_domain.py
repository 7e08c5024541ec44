"""Pure credit-note rules: numbering, limits, application, status, expiry, settings and list filters."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from services.credit_notes.domain import (
    DEFAULT_REASONS,
    CreatedWithin,
    CreditNote,
    ExpiryPeriod,
    NumberFormat,
    PaymentCredit,
    PeriodUnit,
    Policy,
    Status,
    add_months,
    created_range,
    status_for,
    usage_percentage,
    validate_amount_range,
    validate_reason,
    validate_remarks,
)
from shared.errors import Rejected

D = Decimal
CREATED = datetime(2025, 4, 20, 10, 30, tzinfo=UTC)
NEXT_YEAR = datetime(2026, 4, 20, 10, 30, tzinfo=UTC)


def note(amount: str = "100.00", applied: str = "0.00", status: Status = Status.ACTIVE) -> CreditNote:
    return CreditNote(amount=D(amount), expires_at=NEXT_YEAR, applied=D(applied), status=status)


class TestNumbering:
    def test_first_credit_note_number_is_cn_46129(self) -> None:
        assert NumberFormat().render(1) == "CN-46129"

    def test_numbers_follow_the_sequence_one_by_one(self) -> None:
        assert [NumberFormat().render(n) for n in (1, 2, 3)] == ["CN-46129", "CN-46130", "CN-46131"]

    def test_prefix_start_and_padding_come_from_the_format(self) -> None:
        assert NumberFormat(prefix="CR/", padding=6, start=7).render(1) == "CR/000007"

    @given(st.integers(min_value=1, max_value=10**9))
    def test_distinct_sequence_values_give_distinct_increasing_numbers(self, value: int) -> None:
        fmt = NumberFormat()
        assert int(fmt.render(value + 1).removeprefix("CN-")) == int(fmt.render(value).removeprefix("CN-")) + 1


class TestExpiry:
    def test_ac28_default_expiry_is_one_year_from_creation(self) -> None:
        assert Policy().expiry.expires_at(CREATED) == NEXT_YEAR

    def test_one_year_after_a_leap_day_is_the_last_day_of_february(self) -> None:
        leap = datetime(2028, 2, 29, tzinfo=UTC)
        assert ExpiryPeriod(1, PeriodUnit.YEARS).expires_at(leap) == datetime(2029, 2, 28, tzinfo=UTC)

    def test_one_year_spanning_a_leap_day_is_still_the_same_date(self) -> None:
        created = datetime(2027, 4, 20, tzinfo=UTC)
        assert ExpiryPeriod(1, PeriodUnit.YEARS).expires_at(created) == datetime(2028, 4, 20, tzinfo=UTC)

    def test_months_keep_the_day_or_clamp_to_the_month_end(self) -> None:
        assert add_months(datetime(2025, 1, 31, tzinfo=UTC), 1) == datetime(2025, 2, 28, tzinfo=UTC)
        assert add_months(datetime(2025, 11, 15, tzinfo=UTC), 3) == datetime(2026, 2, 15, tzinfo=UTC)

    def test_days_are_added_exactly(self) -> None:
        assert ExpiryPeriod(90, PeriodUnit.DAYS).expires_at(CREATED) == CREATED + timedelta(days=90)

    def test_ac44_a_configured_period_changes_the_expiry(self) -> None:
        policy = Policy(expiry=ExpiryPeriod(6, PeriodUnit.MONTHS))
        assert policy.expiry.expires_at(CREATED) == datetime(2025, 10, 20, 10, 30, tzinfo=UTC)

    @pytest.mark.parametrize(
        ("count", "unit"), [(0, PeriodUnit.DAYS), (11, PeriodUnit.YEARS), (121, PeriodUnit.MONTHS)]
    )
    def test_periods_outside_one_day_to_ten_years_are_refused(self, count: int, unit: PeriodUnit) -> None:
        with pytest.raises(Rejected) as refused:
            ExpiryPeriod(count, unit)
        assert refused.value.field == "expiry.count"

    @given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 12, 31)), st.integers(1, 120))
    def test_expiry_is_always_after_creation(self, created: datetime, months: int) -> None:
        moment = created.replace(tzinfo=UTC)
        assert ExpiryPeriod(months, PeriodUnit.MONTHS).expires_at(moment) > moment


class TestPolicy:
    def test_default_reasons_are_the_seven_of_the_seed(self) -> None:
        assert Policy().reasons == (
            "Overpayment",
            "Duplicate Payment",
            "Billing Error",
            "Billing Adjustment",
            "Refund Request",
            "Customer Request",
            "Other",
        )

    def test_round_trips_through_json(self) -> None:
        policy = Policy(ExpiryPeriod(18, PeriodUnit.MONTHS), ("Overpayment", "Goodwill"))
        assert Policy.from_json(policy.to_json()) == policy

    def test_overpayment_cannot_be_removed_from_the_reasons(self) -> None:
        with pytest.raises(Rejected, match="Overpayment"):
            Policy(reasons=("Billing Error",))

    def test_duplicate_reasons_are_refused(self) -> None:
        with pytest.raises(Rejected) as refused:
            Policy(reasons=("Overpayment", "overpayment"))
        assert refused.value.code == "reasons_duplicated"

    def test_an_empty_reason_list_is_refused(self) -> None:
        with pytest.raises(Rejected):
            Policy(reasons=())

    def test_a_blank_or_too_long_reason_is_refused(self) -> None:
        for bad in (" ", "x" * 51, " padded"):
            with pytest.raises(Rejected):
                Policy(reasons=("Overpayment", bad))


class TestReasonAndRemarks:
    def test_ac26_reason_must_be_from_the_configured_list(self) -> None:
        assert validate_reason("Billing Error", DEFAULT_REASONS) == "Billing Error"
        with pytest.raises(Rejected) as refused:
            validate_reason("Because", DEFAULT_REASONS)
        assert (refused.value.code, refused.value.field) == ("unknown_reason", "reason")

    def test_ac26_reason_is_mandatory(self) -> None:
        with pytest.raises(Rejected) as refused:
            validate_reason("  ", DEFAULT_REASONS)
        assert refused.value.code == "reason_required"

    def test_remarks_are_optional_and_trimmed(self) -> None:
        assert validate_remarks(None) is None
        assert validate_remarks("   ") is None
        assert validate_remarks(" paid twice ") == "paid twice"

    def test_remarks_longer_than_500_characters_are_refused(self) -> None:
        assert validate_remarks("x" * 500) == "x" * 500
        with pytest.raises(Rejected) as refused:
            validate_remarks("x" * 501)
        assert refused.value.field == "remarks"


class TestIssuingAgainstAPayment:
    def test_ac25_credit_may_equal_but_not_exceed_the_payment_amount(self) -> None:
        assert PaymentCredit(amount=D("145.50")).issue(D("145.50")).credited == D("145.50")
        with pytest.raises(Rejected) as refused:
            PaymentCredit(amount=D("145.50")).issue(D("145.51"))
        assert (refused.value.code, refused.value.field) == ("amount_exceeds_payment", "amount")

    def test_ac25_credit_already_issued_lowers_the_maximum(self) -> None:
        payment = PaymentCredit(amount=D("150.00")).issue(D("4.50"))
        assert payment.creditable == D("145.50")
        with pytest.raises(Rejected):
            payment.issue(D("145.51"))

    def test_ac41_credit_amount_cannot_be_zero_or_negative(self) -> None:
        for amount in (D("0.00"), D("-0.01"), D("-5")):
            with pytest.raises(Rejected) as refused:
                PaymentCredit(amount=D("10.00")).issue(amount)
            assert refused.value.code == "amount_not_positive"

    def test_ac27_remaining_payment_value_is_payment_minus_credit(self) -> None:
        assert PaymentCredit(amount=D("145.50")).issue(D("45.50")).remaining_value == D("100.00")

    def test_ac27_remaining_payment_value_zero_is_a_full_reversal(self) -> None:
        assert PaymentCredit(amount=D("145.50")).issue(D("145.50")).remaining_value == D("0.00")

    def test_a_cancelled_payment_gets_no_new_credit_notes(self) -> None:
        with pytest.raises(Rejected) as refused:
            PaymentCredit(amount=D("10.00"), payment_status="Cancelled").issue(D("1.00"))
        assert refused.value.code == "payment_cancelled"

    @pytest.mark.parametrize(("status", "code"), [("Cancelled", "payment_cancelled"), ("Refunded", "payment_refunded")])
    def test_a_closed_payment_has_nothing_creditable_and_the_refusal_names_the_receipt(
        self, status: str, code: str
    ) -> None:
        payment = PaymentCredit(amount=D("10.00"), credited=D("2.00"), payment_status=status)
        assert payment.creditable == D("0")
        with pytest.raises(Rejected) as refused:
            payment.issue(D("0.01"))
        assert (refused.value.code, refused.value.field) == (code, "receipt_number")

    def test_a_posted_payment_can_be_credited_up_to_what_is_left(self) -> None:
        assert PaymentCredit(amount=D("10.00"), credited=D("2.00"), payment_status="Posted").creditable == D("8.00")


class TestApplying:
    def test_ac29_usage_percentage_has_one_decimal(self) -> None:
        assert usage_percentage(D("1.00"), D("3.00")) == D("33.3")
        assert usage_percentage(D("2.00"), D("3.00")) == D("66.7")
        assert usage_percentage(D("4.50"), D("4.50")) == D("100.0")
        assert usage_percentage(D("0.00"), D("4.50")) == D("0.0")

    def test_ac29_status_becomes_applied_when_the_remaining_balance_reaches_zero(self) -> None:
        partly, amount = note("4.50").apply(D("2.00"), item_outstanding=D("100.00"), now=CREATED)
        assert (partly.status, partly.remaining, amount) == (Status.ACTIVE, D("2.50"), D("2.00"))
        used, _ = partly.apply(D("2.50"), item_outstanding=D("100.00"), now=CREATED)
        assert (used.status, used.remaining, used.applied, usage_percentage(used.applied, used.amount)) == (
            Status.APPLIED,
            D("0.00"),
            D("4.50"),
            D("100.0"),
        )

    def test_without_an_amount_applies_as_much_as_credit_and_item_allow(self) -> None:
        assert note("50.00").apply(None, item_outstanding=D("20.00"), now=CREATED)[1] == D("20.00")
        assert note("50.00").apply(None, item_outstanding=D("80.00"), now=CREATED)[1] == D("50.00")

    def test_cannot_apply_more_than_the_remaining_credit(self) -> None:
        with pytest.raises(Rejected) as refused:
            note("10.00", applied="9.99").apply(D("0.02"), item_outstanding=D("100"), now=CREATED)
        assert refused.value.code == "amount_exceeds_remaining"

    def test_cannot_apply_more_than_the_item_owes(self) -> None:
        with pytest.raises(Rejected) as refused:
            note("10.00").apply(D("5.01"), item_outstanding=D("5.00"), now=CREATED)
        assert refused.value.code == "amount_exceeds_outstanding"

    def test_cannot_apply_to_an_item_with_nothing_outstanding(self) -> None:
        with pytest.raises(Rejected) as refused:
            note().apply(None, item_outstanding=D("0.00"), now=CREATED)
        assert refused.value.code == "item_not_open"

    def test_a_used_up_credit_note_cannot_be_applied(self) -> None:
        with pytest.raises(Rejected) as refused:
            note("5.00", applied="5.00", status=Status.APPLIED).apply(None, item_outstanding=D("9"), now=CREATED)
        assert refused.value.code == "credit_note_used_up"

    def test_a_credit_note_past_its_expiry_cannot_be_applied_even_before_the_job_runs(self) -> None:
        with pytest.raises(Rejected) as refused:
            note().apply(D("1.00"), item_outstanding=D("9"), now=NEXT_YEAR)
        assert refused.value.code == "credit_note_expired"

    def test_ac42_status_follows_the_remaining_balance(self) -> None:
        assert status_for(D("0.01")) is Status.ACTIVE
        assert status_for(D("0.00")) is Status.APPLIED
        assert status_for(D("3.00"), expired=True) is Status.EXPIRED


class TestExpiring:
    def test_an_active_note_past_its_expiry_expires_keeping_its_balances(self) -> None:
        expired = note("10.00", applied="4.00").expire(NEXT_YEAR)
        assert (expired.status, expired.remaining, expired.applied) == (Status.EXPIRED, D("6.00"), D("4.00"))

    def test_a_note_before_its_expiry_does_not_expire(self) -> None:
        with pytest.raises(Rejected):
            note().expire(NEXT_YEAR - timedelta(seconds=1))

    def test_an_applied_note_never_expires(self) -> None:
        assert not note("5.00", applied="5.00", status=Status.APPLIED).is_due_to_expire(NEXT_YEAR)


class TestListFilters:
    NOW = datetime(2025, 4, 23, 15, 0, tzinfo=UTC)  # a Wednesday
    ZONE = ZoneInfo("UTC")

    def test_today_is_the_current_day_in_the_utility_time_zone(self) -> None:
        start, end = created_range(CreatedWithin.TODAY, now=self.NOW, zone=ZoneInfo("America/New_York"))
        assert (start.date(), end.date(), start.utcoffset()) == (
            date(2025, 4, 23),
            date(2025, 4, 24),
            timedelta(hours=-4),
        )

    def test_this_week_starts_on_monday(self) -> None:
        start, end = created_range(CreatedWithin.THIS_WEEK, now=self.NOW, zone=self.ZONE)
        assert (start.date(), end.date()) == (date(2025, 4, 21), date(2025, 4, 24))

    def test_this_month_starts_on_the_first(self) -> None:
        start, _ = created_range(CreatedWithin.THIS_MONTH, now=self.NOW, zone=self.ZONE)
        assert start.date() == date(2025, 4, 1)

    def test_custom_range_includes_the_to_day(self) -> None:
        start, end = created_range(
            CreatedWithin.CUSTOM, now=self.NOW, zone=self.ZONE, date_from=date(2025, 1, 1), date_to=date(2025, 1, 31)
        )
        assert (start.date(), end.date()) == (date(2025, 1, 1), date(2025, 2, 1))

    def test_custom_range_needs_from_and_to_in_order(self) -> None:
        for kwargs, field in (
            ({"date_to": date(2025, 1, 1)}, "created_from"),
            ({"date_from": date(2025, 1, 1)}, "created_to"),
            ({"date_from": date(2025, 2, 1), "date_to": date(2025, 1, 1)}, "created_from"),
        ):
            with pytest.raises(Rejected) as refused:
                created_range(CreatedWithin.CUSTOM, now=self.NOW, zone=self.ZONE, **kwargs)
            assert refused.value.field == field

    def test_amount_range_must_be_in_order_and_not_negative(self) -> None:
        validate_amount_range(D("1"), D("1"))
        validate_amount_range(None, D("5"))
        with pytest.raises(Rejected):
            validate_amount_range(D("5"), D("1"))
        with pytest.raises(Rejected):
            validate_amount_range(D("-1"), None)


# --- money invariants, for any sequence of issues, applications and expiries ---

amounts = st.decimals(min_value=D("0.01"), max_value=D("500.00"), places=2)
any_amounts = st.decimals(min_value=D("-10.00"), max_value=D("600.00"), places=2)


class CreditNoteLedger(RuleBasedStateMachine):
    """Payments, the credit notes issued against them and their applications, driven only through the domain."""

    def __init__(self) -> None:
        super().__init__()
        self.payments: list[PaymentCredit] = []
        self.notes: list[tuple[int, CreditNote]] = []  # (payment index, note)
        self.applied_log: list[Decimal] = []  # what each note really had applied, by note index
        self.now = CREATED

    @rule(amount=amounts)
    def post_payment(self, amount: Decimal) -> None:
        self.payments.append(PaymentCredit(amount=amount))

    @precondition(lambda self: self.payments)
    @rule(data=st.data(), amount=any_amounts)
    def issue(self, data: st.DataObject, amount: Decimal) -> None:
        index = data.draw(st.integers(0, len(self.payments) - 1))
        payment = self.payments[index]
        try:
            self.payments[index] = payment.issue(amount)
        except Rejected:
            assert amount <= 0 or amount > payment.amount - payment.credited
            return
        self.notes.append((index, CreditNote(amount=amount, expires_at=Policy().expiry.expires_at(self.now))))
        self.applied_log.append(D("0.00"))

    @precondition(lambda self: self.notes)
    @rule(data=st.data(), amount=st.one_of(st.none(), any_amounts), outstanding=any_amounts)
    def apply(self, data: st.DataObject, amount: Decimal | None, outstanding: Decimal) -> None:
        index = data.draw(st.integers(0, len(self.notes) - 1))
        payment_index, before = self.notes[index]
        try:
            after, used = before.apply(amount, item_outstanding=outstanding, now=self.now)
        except Rejected:
            return
        assert D("0.00") < used <= min(before.remaining, outstanding)
        self.notes[index] = (payment_index, after)
        self.applied_log[index] += used

    @rule(days=st.integers(0, 400))
    def time_passes_and_the_job_runs(self, days: int) -> None:
        self.now += timedelta(days=days)
        self.notes = [(p, n.expire(self.now) if n.is_due_to_expire(self.now) else n) for p, n in self.notes]

    @invariant()
    def applied_plus_remaining_is_the_original_and_nothing_is_negative(self) -> None:
        for (_, n), applied in zip(self.notes, self.applied_log, strict=True):
            assert n.applied + n.remaining == n.amount
            assert n.applied == applied
            assert n.amount > 0 and n.applied >= 0 and n.remaining >= 0

    @invariant()
    def credit_per_payment_never_exceeds_its_amount(self) -> None:
        for index, payment in enumerate(self.payments):
            issued = sum((n.amount for p, n in self.notes if p == index), D("0.00"))
            assert issued == payment.credited <= payment.amount
            assert payment.remaining_value == payment.amount - issued >= 0

    @invariant()
    def statuses_are_consistent_with_balances(self) -> None:
        for _, n in self.notes:
            if n.status is Status.APPLIED:
                assert n.remaining == 0
            elif n.status is Status.ACTIVE:
                assert n.remaining > 0
            assert D("0.0") <= usage_percentage(n.applied, n.amount) <= D("100.0")


TestCreditNoteLedger = CreditNoteLedger.TestCase
TestCreditNoteLedger.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
