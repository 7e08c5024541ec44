"""The matching engine: rules in priority order, outcomes exactly once, no item matched twice, totals kept."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from services.reconciliation.matching import (
    BANK_FEE_RULE,
    BankLine,
    ExpectedItem,
    FeePolicy,
    ItemOutcome,
    LineOutcome,
    Rule,
    reconcile,
)

D = Decimal
TODAY = date(2025, 4, 30)
FEES = FeePolicy(codes=frozenset({"CHRG"}), keywords=("SERVICE CHARGE",))


def line(line_id: str, amount: str, day: date = date(2025, 4, 2), reference: str = "", **kw: str) -> BankLine:
    return BankLine(line_id, D(amount), "USD", day, reference=reference, **kw)


def item(item_id: str, amount: str, day: date = date(2025, 4, 1), **kw: object) -> ExpectedItem:
    return ExpectedItem(item_id, D(amount), "USD", day, **kw)  # type: ignore[arg-type]


class TestOneToOne:
    def test_a_line_naming_a_payment_matches_it_with_the_reference_rule(self) -> None:
        result = reconcile(
            [line("L1", "145.50", reference="PAY-2025-000001")],
            [item("P1", "145.50", reference="PAY-2025-000001", window_days=2)],
            today=TODAY,
        )
        [match] = result.matches
        assert (match.rule, match.line_ids, match.item_ids) == ("reference_exact", ("L1",), ("P1",))
        assert match.score == D(100)
        assert result.lines["L1"] is LineOutcome.MATCHED and result.items["P1"] is ItemOutcome.MATCHED

    def test_amount_and_date_match_prefers_the_item_whose_window_holds_the_line(self) -> None:
        result = reconcile(
            [line("L1", "80.00", date(2025, 4, 10))],
            [item("far", "80.00", date(2025, 3, 1)), item("near", "80.00", date(2025, 4, 9), window_days=1)],
            today=TODAY,
        )
        assert result.matches[0].item_ids == ("near",)
        assert result.items["far"] is ItemOutcome.MISSING

    def test_an_amount_difference_within_tolerance_matches_and_is_recorded(self) -> None:
        rules = [Rule("loose", "one_to_one", amount_tolerance=D("0.05"), date_tolerance_days=2)]
        result = reconcile([line("L1", "99.97")], [item("P1", "100.00")], rules=rules, today=TODAY)
        [match] = result.matches
        assert match.differences == {"amount": "-0.03", "days": "1"}
        assert match.score < 100

    def test_outside_the_tolerance_nothing_matches(self) -> None:
        result = reconcile([line("L1", "99.00")], [item("P1", "100.00")], today=TODAY)
        assert result.matches == []
        assert result.lines["L1"] is LineOutcome.EXCEPTED

    def test_another_currency_never_matches(self) -> None:
        other = BankLine("L1", D("10.00"), "EUR", date(2025, 4, 1))
        assert reconcile([other], [item("P1", "10.00")], today=TODAY).matches == []


class TestOneToMany:
    def test_a_deposit_matches_the_days_cash_of_its_branch(self) -> None:
        cash = [item(f"P{i}", "20.00", group="DEP/Main/2025-04-01/Cash", window_days=2) for i in range(5)]
        result = reconcile([line("L1", "100.00", date(2025, 4, 2))], cash, today=TODAY)
        [match] = result.matches
        assert match.rule == "group_by_amount_date" and len(match.item_ids) == 5

    def test_a_payout_matches_its_balance_transactions_net_of_stripe_fees(self) -> None:
        charges = [item(f"txn_{i}", "9.41", group="po_123", gateway_fee=D("0.59"), window_days=2) for i in range(3)]
        result = reconcile([line("L1", "28.23", reference="STRIPE PAYOUT po_123")], charges, today=TODAY)
        [match] = result.matches
        assert match.rule == "group_by_reference"
        assert match.differences["gateway_fees"] == "1.77" and match.differences["gross"] == "30.00"


class TestManyToOne:
    def test_two_lines_naming_one_payment_match_it_together(self) -> None:
        lines = [line("L1", "60.00", reference="INV-9 part"), line("L2", "40.00", reference="INV-9 rest")]
        result = reconcile(lines, [item("P1", "100.00", reference="INV-9")], today=TODAY)
        [match] = result.matches
        assert match.rule == "lines_by_reference" and set(match.line_ids) == {"L1", "L2"}


class TestFeesAndWindows:
    def test_a_bank_charge_is_recognised_as_a_fee(self) -> None:
        result = reconcile([line("F", "-12.50", text="MONTHLY SERVICE CHARGE")], [], fees=FEES, today=TODAY)
        assert result.matches[0].rule == BANK_FEE_RULE and result.lines["F"] is LineOutcome.MATCHED

    def test_a_credit_is_never_a_fee(self) -> None:
        result = reconcile([line("C", "12.50", text="SERVICE CHARGE REFUND")], [], fees=FEES, today=TODAY)
        assert result.matches == []

    def test_an_item_inside_its_window_is_expected_and_past_it_missing(self) -> None:
        items = [item("inside", "5.00", TODAY - timedelta(days=1), window_days=2), item("late", "6.00", window_days=2)]
        result = reconcile([], items, today=TODAY)
        assert result.items == {"inside": ItemOutcome.EXPECTED, "late": ItemOutcome.MISSING}

    def test_a_recent_unmatched_line_is_expected_an_old_one_excepted(self) -> None:
        lines = [line("new", "5.00", TODAY), line("old", "6.00", TODAY - timedelta(days=5))]
        result = reconcile(lines, [], today=TODAY, line_grace_days=2)
        assert result.lines == {"new": LineOutcome.EXPECTED, "old": LineOutcome.EXCEPTED}


# --- properties ---

amounts = st.integers(min_value=-5000, max_value=50000).map(lambda c: D(c).scaleb(-2))
days = st.integers(min_value=0, max_value=20).map(lambda n: date(2025, 4, 1) + timedelta(days=n))
references = st.sampled_from(["", "PAY-1", "PAY-2", "PAY-3", "po_1", "DEP/A"])


@st.composite
def books(draw: st.DrawFn) -> tuple[list[BankLine], list[ExpectedItem]]:
    lines = [
        BankLine(
            f"L{i}",
            draw(amounts),
            "USD",
            draw(days),
            reference=draw(references),
            text=draw(st.sampled_from(["", "FEE"])),
        )
        for i in range(draw(st.integers(0, 25)))
    ]
    items = [
        ExpectedItem(
            f"I{i}",
            draw(amounts),
            "USD",
            draw(days),
            window_days=draw(st.integers(0, 3)),
            reference=draw(references),
            group=draw(st.sampled_from([None, "po_1", "DEP/A", "DEP/B"])),
        )
        for i in range(draw(st.integers(0, 25)))
    ]
    # Some lines copy an item's amount and date, so matches really happen.
    for i, copied in enumerate(items[: len(lines) // 2]):
        lines[i] = BankLine(lines[i].line_id, copied.amount, "USD", copied.origin_date, reference=copied.reference)
    return lines, items


RULES = [
    Rule("reference_exact", "one_to_one", D("0.10"), 2, require_reference=True),
    Rule("group_by_reference", "one_to_many", D("0.10"), 2, require_reference=True),
    Rule("lines_by_reference", "many_to_one", D("0.10"), 2, require_reference=True),
    Rule("group_by_amount_date", "one_to_many", D("0.00"), 1),
    Rule("amount_date", "one_to_one", D("0.02"), 3),
]


@settings(max_examples=300, deadline=None)
@given(books())
def test_every_line_ends_with_exactly_one_outcome_and_no_item_is_matched_twice(
    data: tuple[list[BankLine], list[ExpectedItem]],
) -> None:
    """INVARIANT: a bank line is matched, expected or excepted exactly once; a payment is never matched twice."""
    lines, items = data
    result = reconcile(lines, items, rules=RULES, fees=FeePolicy(keywords=("FEE",)), today=date(2025, 4, 25))
    assert set(result.lines) == {x.line_id for x in lines}
    matched_lines = [lid for m in result.matches for lid in m.line_ids]
    assert len(matched_lines) == len(set(matched_lines))
    assert set(matched_lines) == {lid for lid, o in result.lines.items() if o is LineOutcome.MATCHED}
    matched_items = [iid for m in result.matches for iid in m.item_ids]
    assert len(matched_items) == len(set(matched_items))
    assert set(matched_items) == {iid for iid, o in result.items.items() if o is ItemOutcome.MATCHED}


@settings(max_examples=300, deadline=None)
@given(books())
def test_matched_and_unmatched_totals_add_up_to_the_statements(
    data: tuple[list[BankLine], list[ExpectedItem]],
) -> None:
    """INVARIANT: reconciling never loses or invents money: matched + unmatched = the statement's total."""
    lines, items = data
    result = reconcile(lines, items, rules=RULES, fees=FeePolicy(keywords=("FEE",)), today=date(2025, 4, 25))
    by_id = {x.line_id: x for x in lines}
    matched = sum((m.line_total for m in result.matches), D(0))
    unmatched = sum((by_id[lid].amount for lid, o in result.lines.items() if o is not LineOutcome.MATCHED), D(0))
    assert matched + unmatched == sum((x.amount for x in lines), D(0))
    for m in result.matches:
        assert m.line_total == sum((by_id[lid].amount for lid in m.line_ids), D(0))
        assert abs(D(m.differences.get("amount", "0"))) <= D("0.10") or m.rule == BANK_FEE_RULE
