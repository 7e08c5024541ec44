"""Payouts' pure rules: payout methods, commission rules (exhaustive and property tests), run plans, statuses."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.payouts import domain, planning
from services.payouts.conversion import Rate
from services.payouts.domain import (
    CommissionRule,
    MonthToDate,
    PayeeStatus,
    PayoutMethod,
    PayoutStatus,
    RuleKind,
    Tier,
)
from services.payouts.planning import OpenLine, RunPayee
from shared.errors import Rejected

D = Decimal
DAY = date(2025, 4, 30)


def rule(kind: RuleKind = RuleKind.PERCENTAGE, **kw: object) -> CommissionRule:
    values: dict[str, object] = {
        "rule_id": "RULE-1",
        "kind": kind,
        "currency": "USD",
        "effective_from": date(2025, 1, 1),
        "payee_id": "PE-1",
    }
    values.update(kw)
    return domain.validate_rule(CommissionRule(**values))  # type: ignore[arg-type]


class TestPayoutDetails:
    def test_a_valid_iban_is_kept_compact_with_its_bank_bic(self):
        details = domain.payout_details("bank", stripe_account=None, iban="DE89 3704 0044 0532 0130 00", bic=None)
        assert details.iban == "DE89370400440532013000"
        assert details.bic == "COBADEFFXXX"

    @pytest.mark.parametrize(
        ("kwargs", "code", "field"),
        [
            ({"method": "bank", "iban": "DE89370400440532013001"}, "invalid_iban", "iban"),
            ({"method": "bank", "iban": ""}, "iban_required", "iban"),
            ({"method": "bank", "iban": "DE89370400440532013000", "bic": "XXXX"}, "invalid_bic", "bic"),
            ({"method": "stripe", "stripe_account": "1234"}, "invalid_stripe_account", "stripe_account"),
            ({"method": "cheque"}, "unknown_method", "method"),
            ({"method": None}, "payout_method_required", "method"),
        ],
    )
    def test_bad_payout_details_are_refused_naming_the_field(self, kwargs, code, field):
        args = {"stripe_account": None, "iban": None, "bic": None, **kwargs}
        method = args.pop("method")
        with pytest.raises(Rejected) as error:
            domain.payout_details(method, **args)
        assert (error.value.code, error.value.field) == (code, field)

    def test_unknown_currency_and_country_name_their_field(self):
        with pytest.raises(Rejected) as error:
            domain.currency_code("XYZ", field="payout_currency")
        assert (error.value.code, error.value.field) == ("unknown_currency", "payout_currency")
        with pytest.raises(Rejected) as error:
            domain.country_code("QQ")
        assert error.value.field == "country"
        assert domain.currency_code(" eur ") == "EUR"


class TestCommissionRules:
    def test_percentage_of_a_payment_rounds_half_even_to_the_cent(self):
        # 2.5% of 10.10 = 0.2525 -> 0.25 (half-even would keep .25; half-up would too), 2.5% of 10.30 = 0.2575 -> 0.26
        assert domain.commission_for(rule(percent=D("2.5")), D("10.10"), "USD", MonthToDate()).amount == D("0.25")
        assert domain.commission_for(rule(percent=D("2.5")), D("10.30"), "USD", MonthToDate()).amount == D("0.26")
        assert domain.commission_for(rule(percent=D("5")), D("0.50"), "USD", MonthToDate()).amount == D("0.02")

    def test_fixed_per_payment_ignores_the_amount(self):
        fixed = rule(RuleKind.FIXED, fixed=D("0.75"))
        assert domain.commission_for(fixed, D("1000.00"), "USD", MonthToDate()).amount == D("0.75")

    def test_minimum_and_cap_per_payment(self):
        bounded = rule(percent=D("1"), minimum_per_payment=D("0.50"), cap_per_payment=D("5.00"))
        assert domain.commission_for(bounded, D("10.00"), "USD", MonthToDate()).amount == D("0.50")
        assert domain.commission_for(bounded, D("200.00"), "USD", MonthToDate()).amount == D("2.00")
        assert domain.commission_for(bounded, D("900.00"), "USD", MonthToDate()).amount == D("5.00")

    def test_monthly_cap_limits_what_is_left_of_the_month(self):
        capped = rule(percent=D("10"), cap_per_month=D("25.00"))
        month = MonthToDate(volume=D("200"), commission=D("20.00"))
        assert domain.commission_for(capped, D("100.00"), "USD", month).amount == D("5.00")
        spent = MonthToDate(volume=D("300"), commission=D("25.00"))
        assert domain.commission_for(capped, D("100.00"), "USD", spent).amount == D("0.00")

    def test_tiers_are_marginal_over_the_months_volume(self):
        tiered = rule(RuleKind.TIERED, tiers=(Tier(D("0"), D("1")), Tier(D("1000"), D("2")), Tier(D("5000"), D("3"))))
        # 900 before, 200 now: 100 at 1% and 100 at 2% = 3.00
        assert domain.commission_for(tiered, D("200.00"), "USD", MonthToDate(volume=D("900"))).amount == D("3.00")
        assert domain.commission_for(tiered, D("100.00"), "USD", MonthToDate(volume=D("6000"))).amount == D("3.00")

    def test_a_rule_in_another_currency_is_refused(self):
        with pytest.raises(Rejected) as error:
            domain.commission_for(rule(percent=D("1")), D("10"), "EUR", MonthToDate())
        assert error.value.code == "rule_currency_mismatch"

    @pytest.mark.parametrize(
        ("changes", "field"),
        [
            ({"percent": None}, "percent"),
            ({"percent": D("101")}, "percent"),
            ({"kind": RuleKind.TIERED, "tiers": (Tier(D("10"), D("1")),)}, "tiers"),
            ({"kind": RuleKind.TIERED, "tiers": (Tier(D("0"), D("1")), Tier(D("0"), D("2")))}, "tiers"),
            ({"percent": D("1"), "cap_per_month": D("-1")}, "cap_per_month"),
            ({"percent": D("1"), "minimum_per_payment": D("5"), "cap_per_payment": D("1")}, "minimum_per_payment"),
            ({"percent": D("1"), "effective_to": date(2024, 1, 1)}, "effective_to"),
            ({"percent": D("1"), "payee_group": "agents"}, "payee_id"),
            ({"percent": D("1"), "currency": "ABC"}, "currency"),
        ],
    )
    def test_invalid_rules_are_refused_naming_the_field(self, changes, field):
        with pytest.raises(Rejected) as error:
            rule(**changes)
        assert error.value.field == field

    def test_the_rule_in_force_is_the_payees_own_then_its_groups_by_date(self):
        group_rule = CommissionRule(
            "G", RuleKind.PERCENTAGE, "USD", date(2025, 1, 1), percent=D("1"), payee_group="retail"
        )
        old = CommissionRule(
            "A1", RuleKind.PERCENTAGE, "USD", date(2025, 1, 1), date(2025, 4, 1), percent=D("2"), payee_id="PE-1"
        )
        new = CommissionRule("A2", RuleKind.PERCENTAGE, "USD", date(2025, 4, 1), percent=D("3"), payee_id="PE-1")
        rules = [group_rule, old, new]
        assert domain.choose_rule(rules, payee_id="PE-1", group="retail", day=date(2025, 3, 31)) is old
        assert domain.choose_rule(rules, payee_id="PE-1", group="retail", day=date(2025, 4, 1)) is new
        assert domain.choose_rule(rules, payee_id="PE-2", group="retail", day=date(2025, 4, 1)) is group_rule
        assert domain.choose_rule(rules, payee_id="PE-2", group=None, day=date(2025, 4, 1)) is None


amounts = st.decimals(min_value=D("0.01"), max_value=D("100000"), places=2)
percents = st.decimals(min_value=D("0"), max_value=D("100"), places=3)


@st.composite
def tier_sets(draw: st.DrawFn) -> tuple[Tier, ...]:
    bounds = sorted(draw(st.sets(st.integers(min_value=1, max_value=50000), max_size=4)))
    return tuple(Tier(D(b), draw(percents)) for b in [0, *bounds])


class TestCommissionProperties:
    @settings(max_examples=200)
    @given(tiers=tier_sets(), payments=st.lists(amounts, min_size=1, max_size=12), data=st.data())
    def test_tiered_commissions_of_a_month_add_up_to_the_same_in_any_order(self, tiers, payments, data):
        order = data.draw(st.permutations(payments))

        def total(sequence: list[Decimal]) -> Decimal:
            volume, earned = D(0), D(0)
            for amount in sequence:
                earned += domain.tiered_amount(tiers, volume, amount)
                volume += amount
            return earned

        assert total(payments) == total(order) == domain.tiered_amount(tiers, D(0), sum(payments, D(0)))

    @settings(max_examples=300)
    @given(
        kind=st.sampled_from(list(RuleKind)),
        percent=percents,
        fixed=amounts,
        tiers=tier_sets(),
        minimum=st.none() | st.decimals(min_value=0, max_value=5, places=2),
        cap=st.none() | st.decimals(min_value=5, max_value=50, places=2),
        month_cap=st.none() | st.decimals(min_value=0, max_value=500, places=2),
        payments=st.lists(amounts, min_size=1, max_size=20),
    )
    def test_commission_is_never_negative_in_the_minor_unit_and_never_beyond_the_monthly_cap(
        self, kind, percent, fixed, tiers, minimum, cap, month_cap, payments
    ):
        chosen = rule(
            kind,
            percent=percent,
            fixed=fixed,
            tiers=tiers,
            minimum_per_payment=minimum,
            cap_per_payment=cap,
            cap_per_month=month_cap,
        )
        month = MonthToDate()
        for amount in payments:
            result = domain.commission_for(chosen, amount, "USD", month)
            assert result.amount >= 0
            assert result.amount == result.amount.quantize(D("0.01"))
            if cap is not None:
                assert result.amount <= cap
            month = MonthToDate(month.volume + amount, month.commission + result.amount)
        if month_cap is not None:
            assert month.commission <= month_cap


USD_EUR = [Rate("EUR", "USD", D("1.1373"), DAY, "ECB"), Rate("EUR", "GBP", D("0.85"), DAY, "ECB")]


def payee(payee_id: str, currency: str = "USD", method: PayoutMethod | None = PayoutMethod.STRIPE) -> RunPayee:
    return RunPayee(payee_id, payee_id, currency, method)


signed_amounts = st.decimals(min_value=D("-500"), max_value=D("500"), places=2).filter(lambda d: d != 0)


@st.composite
def ledgers(draw: st.DrawFn) -> tuple[list[OpenLine], dict[str, RunPayee]]:
    payees = {
        f"PE-{n}": payee(f"PE-{n}", draw(st.sampled_from(["USD", "EUR", "GBP", "JPY"])))
        for n in range(draw(st.integers(1, 5)))
    }
    lines: list[OpenLine] = []
    for n in range(draw(st.integers(0, 30))):
        payee_id = draw(st.sampled_from(sorted(payees)))
        currency = draw(st.sampled_from(["USD", "EUR", "GBP"]))
        amount = draw(signed_amounts)
        lines.append(OpenLine(f"L-{n}", payee_id, amount, currency, DAY))
        if draw(st.booleans()):  # some lines are reversed: the reversal takes exactly the amount back
            lines.append(OpenLine(f"R-{n}", payee_id, domain.reversal_of(amount), currency, DAY, "reversal"))
    return lines, payees


JPY_RATES = [*USD_EUR, Rate("EUR", "JPY", D("162.88"), DAY, "ECB")]


class TestRunPlanProperties:
    @settings(max_examples=300)
    @given(ledger=ledgers(), minimum=st.none() | st.decimals(min_value=0, max_value=100, places=2))
    def test_run_totals_equal_the_sum_of_their_lines_per_currency_and_no_payout_is_negative(self, ledger, minimum):
        """INVARIANT: a run's totals are exactly its lines' converted amounts; no payout of zero or less is sent."""
        lines, payees = ledger
        plan = planning.plan_run(lines, payees, JPY_RATES, as_of=DAY, minimum_amount=minimum)
        sums: dict[str, Decimal] = defaultdict(lambda: D(0))
        for payout in plan.payouts:
            assert payout.amount > 0
            if minimum is not None:
                assert payout.amount >= minimum
            for item in payout.items:
                assert item.conversion.to_currency == payout.currency
                sums[payout.currency] += item.conversion.converted
        assert plan.totals() == dict(sorted(sums.items()))
        planned = {i.line.line_id for p in plan.payouts for i in p.items}
        held = {line_id for h in plan.held for line_id in h.line_ids}
        assert planned.isdisjoint(held)
        assert planned | held == {ln.line_id for ln in lines}

    @settings(max_examples=200)
    @given(ledger=ledgers())
    def test_reversals_net_to_zero(self, ledger):
        """INVARIANT: a reversed line and its reversal together are worth nothing, converted or not."""
        lines, payees = ledger
        by_id = {ln.line_id: ln for ln in lines}
        for line in lines:
            if line.kind == "reversal":
                original = by_id["L-" + line.line_id.split("-", 1)[1]]
                assert original.amount + line.amount == 0
                for payee_ in payees.values():
                    plan = planning.plan_run([original, line], {original.payee_id: payee_}, JPY_RATES, as_of=DAY)
                    assert plan.payouts == ()

    def test_a_missing_rate_holds_the_payee_naming_the_pair(self):
        lines = [OpenLine("L-1", "PE-1", D("10.00"), "CHF", DAY)]
        plan = planning.plan_run(lines, {"PE-1": payee("PE-1")}, USD_EUR, as_of=DAY)
        assert plan.payouts == ()
        assert plan.held[0].code == "missing_rate"
        assert "CHF->USD" in plan.held[0].detail

    def test_a_payee_without_method_is_held(self):
        lines = [OpenLine("L-1", "PE-1", D("10.00"), "USD", DAY)]
        plan = planning.plan_run(lines, {"PE-1": payee("PE-1", method=None)}, [], as_of=DAY)
        assert (plan.held[0].code, plan.held[0].field) == ("payee_without_method", "method")

    def test_a_suspended_payee_is_held(self):
        lines = [OpenLine("L-1", "PE-1", D("10.00"), "USD", DAY)]
        suspended = RunPayee("PE-1", "x", "USD", PayoutMethod.BANK, PayeeStatus.SUSPENDED)
        assert planning.plan_run(lines, {"PE-1": suspended}, [], as_of=DAY).held[0].code == "payee_not_active"

    def test_lines_are_converted_to_the_payees_currency_with_provenance(self):
        lines = [OpenLine("L-1", "PE-1", D("100.00"), "USD", DAY), OpenLine("L-2", "PE-1", D("5.00"), "EUR", DAY)]
        plan = planning.plan_run(lines, {"PE-1": payee("PE-1", "EUR")}, USD_EUR, as_of=DAY)
        first = plan.payouts[0].items[0].conversion
        assert (first.converted, first.rate, first.as_of) == (D("87.93"), D("0.8792754770"), DAY)
        assert first.source == "inverse of ECB"
        assert plan.totals() == {"EUR": D("92.93")}


class TestPayoutStatuses:
    def test_the_lifecycle_moves_forward_only(self):
        assert domain.can_move(PayoutStatus.SCHEDULED, PayoutStatus.APPROVED)
        assert domain.can_move(PayoutStatus.APPROVED, PayoutStatus.SENT)
        assert domain.can_move(PayoutStatus.SENT, PayoutStatus.PAID)
        assert domain.can_move(PayoutStatus.PAID, PayoutStatus.RETURNED)
        assert not domain.can_move(PayoutStatus.PAID, PayoutStatus.SENT)
        assert not domain.can_move(PayoutStatus.FAILED, PayoutStatus.PAID)
        assert not domain.can_move(PayoutStatus.SCHEDULED, PayoutStatus.SENT)

    def test_stripe_event_types_map_to_statuses(self):
        assert domain.gateway_status("payout.paid") is PayoutStatus.PAID
        assert domain.gateway_status("transfer.reversed") is PayoutStatus.RETURNED
        assert domain.gateway_status("payout.canceled") is PayoutStatus.FAILED
        assert domain.gateway_status("payout.updated") is None

    @pytest.mark.parametrize(
        ("event_type", "current", "expected"),
        [
            ("transfer.created", PayoutStatus.APPROVED, PayoutStatus.SENT),
            ("payout.paid", PayoutStatus.SENT, PayoutStatus.PAID),
            ("payout.failed", PayoutStatus.SENT, PayoutStatus.FAILED),
            # The bank sent a paid payout back: Stripe says payout.failed after payout.paid.
            ("payout.failed", PayoutStatus.PAID, PayoutStatus.RETURNED),
            ("transfer.failed", PayoutStatus.PAID, PayoutStatus.RETURNED),
            ("payout.canceled", PayoutStatus.SENT, PayoutStatus.FAILED),
            ("transfer.reversed", PayoutStatus.PAID, PayoutStatus.RETURNED),
            ("transfer.reversed", PayoutStatus.SENT, PayoutStatus.RETURNED),
        ],
    )
    def test_every_reachable_status_comes_from_some_stripe_event(self, event_type, current, expected):
        target = domain.gateway_status(event_type, current)
        assert target is expected
        assert domain.can_move(current, target)

    def test_every_status_after_approval_is_reachable_from_stripe(self):
        reachable = {
            domain.gateway_status(event, current)
            for event in domain.GATEWAY_STATUS
            for current in PayoutStatus
            if domain.gateway_status(event, current) is not None
            and domain.can_move(current, domain.gateway_status(event, current))  # type: ignore[arg-type]
        }
        assert reachable == {PayoutStatus.SENT, PayoutStatus.PAID, PayoutStatus.FAILED, PayoutStatus.RETURNED}

    def test_a_partial_transfer_reversal_does_not_return_the_payout(self):
        assert domain.gateway_status("transfer.reversed", PayoutStatus.SENT, fully_reversed=False) is None
        assert domain.gateway_status("transfer.reversed", PayoutStatus.SENT, fully_reversed=True) is (
            PayoutStatus.RETURNED
        )


class TestTransferLookUp:
    OURS = {"id": "tr_1", "amount": 1319, "currency": "eur", "metadata": {"paydesk_payout_id": "PO-000001"}}

    def test_the_payouts_transfer_is_found_by_metadata_amount_and_currency(self):
        other = {**self.OURS, "id": "tr_0", "metadata": {"paydesk_payout_id": "PO-000002"}}
        assert domain.transfer_of("PO-000001", 1319, "EUR", [other, self.OURS]) == "tr_1"

    @pytest.mark.parametrize(
        "changed",
        [{"amount": 1320}, {"currency": "usd"}, {"metadata": {}}, {"metadata": None}, {"metadata": {"x": "PO-000001"}}],
    )
    def test_a_transfer_that_differs_is_not_the_payouts(self, changed):
        assert domain.transfer_of("PO-000001", 1319, "EUR", [{**self.OURS, **changed}]) is None

    def test_nothing_listed_is_nothing_found(self):
        assert domain.transfer_of("PO-000001", 1319, "EUR", []) is None


class TestSchedules:
    def test_the_periods_start_on_mondays_and_the_first(self):
        assert domain.due_periods(date(2025, 9, 1)) == (
            (domain.Schedule.WEEKLY, date(2025, 9, 1)),
            (domain.Schedule.MONTHLY, date(2025, 9, 1)),
        )
        assert domain.due_periods(date(2025, 9, 3)) == (
            (domain.Schedule.WEEKLY, date(2025, 9, 1)),
            (domain.Schedule.MONTHLY, date(2025, 9, 1)),
        )
        assert domain.due_periods(date(2025, 8, 31)) == (
            (domain.Schedule.WEEKLY, date(2025, 8, 25)),
            (domain.Schedule.MONTHLY, date(2025, 8, 1)),
        )
        assert domain.period_start(domain.Schedule.ON_REQUEST, date(2025, 9, 1)) is None

    @given(st.dates(min_value=date(1990, 1, 1), max_value=date(2100, 12, 31)))
    def test_a_period_starts_on_or_before_today_and_every_day_of_it_has_the_same_start(self, today):
        weekly = domain.period_start(domain.Schedule.WEEKLY, today)
        monthly = domain.period_start(domain.Schedule.MONTHLY, today)
        assert weekly is not None and monthly is not None
        assert weekly.weekday() == 0 and 0 <= (today - weekly).days < 7
        assert monthly.day == 1 and (monthly.year, monthly.month) == (today.year, today.month)
        # The day before a period starts is in the previous period: one run per period, never two.
        tomorrow = today + timedelta(days=1)
        assert (domain.period_start(domain.Schedule.WEEKLY, tomorrow) == weekly) == (tomorrow.weekday() != 0)
        assert (domain.period_start(domain.Schedule.MONTHLY, tomorrow) == monthly) == (tomorrow.day != 1)


class TestSmallRules:
    def test_minor_integer_for_stripe(self):
        assert domain.minor_integer(D("12.34"), "USD") == 1234
        assert domain.minor_integer(D("1234"), "JPY") == 1234

    def test_manual_amounts(self):
        with pytest.raises(Rejected) as error:
            domain.manual_amount(domain.LineKind.MANUAL, D("-1.00"), "USD")
        assert error.value.field == "amount"
        with pytest.raises(Rejected):
            domain.manual_amount(domain.LineKind.ADJUSTMENT, D("1.001"), "USD")
        assert domain.manual_amount(domain.LineKind.ADJUSTMENT, D("-3.00"), "USD") == D("-3.00")

    def test_month_bounds(self):
        assert domain.month_of(date(2025, 12, 15)) == (date(2025, 12, 1), date(2026, 1, 1))
        assert date(2025, 1, 1) + timedelta(days=0) == date(2025, 1, 1)


class TestAgentFor:
    def agents(self) -> list[domain.Agent]:
        return [
            domain.Agent("PE-3", None, "Walk-in", None),
            domain.Agent("PE-2", "north", "Walk-in", "Jane Smith"),
            domain.Agent("PE-1", None, "Lockbox", None),
        ]

    def test_the_agent_linked_to_the_user_earns_before_the_one_linked_to_the_channel(self) -> None:
        assert domain.agent_for(self.agents(), "Walk-in", "Jane Smith") == self.agents()[1]

    def test_another_user_of_the_channel_earns_the_channel_agent(self) -> None:
        assert domain.agent_for(self.agents(), "Walk-in", "Rick Roe") == self.agents()[0]

    def test_a_channel_without_an_agent_earns_nobody(self) -> None:
        assert domain.agent_for(self.agents(), "Online", "Jane Smith") is None
        assert domain.agent_for([], "Walk-in", "Jane Smith") is None

    @given(
        st.lists(
            st.builds(
                domain.Agent,
                st.sampled_from(["PE-1", "PE-2", "PE-3", "PE-4"]),
                st.none(),
                st.sampled_from(["Walk-in", "Lockbox"]),
                st.sampled_from([None, "Jane Smith", "Rick Roe"]),
            ),
            max_size=6,
        ),
        st.sampled_from(["Walk-in", "Lockbox", "Online"]),
        st.sampled_from(["Jane Smith", "Rick Roe"]),
    )
    def test_the_chosen_agent_is_linked_and_the_same_whatever_the_order(
        self, agents: list[domain.Agent], channel: str, user: str
    ) -> None:
        chosen = domain.agent_for(agents, channel, user)
        assert chosen == domain.agent_for(list(reversed(agents)), channel, user)
        linked = [a for a in agents if a.channel == channel and a.user in (None, user)]
        if chosen is None:
            assert not linked
        else:
            assert chosen.channel == channel and chosen.user in (None, user)
            # A user's own agent wins over the channel's.
            assert chosen.user == user or not any(a.user == user for a in linked)
