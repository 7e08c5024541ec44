"""`domain.fold_dues`: a run of issued items folded at once moves the dues exactly as issuing them one at a time."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from services.kpi.domain import DuesKey, DuesMoves, ItemKey, StoredDue, fold_dues

KEYS = st.tuples(st.sampled_from(["bill", "service"]), st.sampled_from(["A", "B", "C"]))
DUES = st.builds(
    StoredDue,
    due_date=st.integers(0, 3).map(lambda n: date(2031, 3, 1) + timedelta(days=n)),
    amount=st.integers(0, 400).map(lambda n: Decimal(n) / 4),
    currency=st.sampled_from(["USD", "EUR"]),
)
EARLIER = st.dictionaries(KEYS, DUES, max_size=4)
ISSUED = st.lists(st.tuples(KEYS, DUES), max_size=12)


def one_at_a_time(
    earlier: dict[ItemKey, StoredDue], issued: list[tuple[ItemKey, StoredDue]]
) -> tuple[dict[ItemKey, StoredDue], dict[DuesKey, tuple[int, Decimal]]]:
    """What the handler does per item, with each fold of one item: the reference the batch must match."""
    stored = dict(earlier)
    rows: dict[DuesKey, tuple[int, Decimal]] = {}
    for key, due in issued:
        folded = fold_dues(stored, [(key, due)])
        stored |= folded.stored
        for day, (items, amount) in folded.moves.items():
            count, total = rows.get(day, (0, Decimal(0)))
            rows[day] = (count + items, total + amount)
    return stored, rows


@given(EARLIER, ISSUED)
def test_a_run_folded_at_once_leaves_the_rows_one_at_a_time_leaves(
    earlier: dict[ItemKey, StoredDue], issued: list[tuple[ItemKey, StoredDue]]
) -> None:
    folded = fold_dues(earlier, issued)
    stored, rows = one_at_a_time(earlier, issued)
    assert {**earlier, **folded.stored} == stored
    assert folded.moves == rows  # the same rows, those that net to zero included
    summed: dict[DuesKey, tuple[int, Decimal]] = {}
    for day, items, amount in folded.steps:
        count, total = summed.get(day, (0, Decimal(0)))
        summed[day] = (count + items, total + amount)
    assert summed == folded.moves


@given(EARLIER, ISSUED)
def test_items_and_money_are_conserved_where_no_currency_changes(
    earlier: dict[ItemKey, StoredDue], issued: list[tuple[ItemKey, StoredDue]]
) -> None:
    issued = [
        (key, StoredDue(d.due_date, d.amount, earlier[key].currency if key in earlier else "USD")) for key, d in issued
    ]
    folded = fold_dues(earlier, issued)
    new_items = {key for key, _ in issued} - earlier.keys()
    assert sum(items for items, _ in folded.moves.values()) == len(new_items)
    before = sum(earlier[key].amount for key in folded.stored if key in earlier)
    assert sum(amount for _, amount in folded.moves.values()) == sum(d.amount for d in folded.stored.values()) - before


def test_a_single_item_one_event_at_a_time() -> None:
    march, april = date(2031, 3, 20), date(2031, 4, 5)
    first = StoredDue(march, Decimal("100.00"), "USD")
    assert fold_dues({("bill", "A"): first}, [(("bill", "A"), first)]) == DuesMoves({}, {}, [])
    moved = fold_dues({("bill", "A"): first}, [(("bill", "A"), StoredDue(april, Decimal("120.00"), "EUR"))])
    # Re-issued in another currency: the row keeps its first, as the table's upsert leaves it.
    assert moved.stored == {("bill", "A"): StoredDue(april, Decimal("120.00"), "USD")}
    assert moved.moves == {
        (march, "USD", "bill"): (-1, Decimal("-100.00")),
        (april, "EUR", "bill"): (1, Decimal("120.00")),
    }
    # In the order one event at a time moves them: out of its old day, then into its new one.
    assert moved.steps == [
        ((march, "USD", "bill"), -1, Decimal("-100.00")),
        ((april, "EUR", "bill"), 1, Decimal("120.00")),
    ]
