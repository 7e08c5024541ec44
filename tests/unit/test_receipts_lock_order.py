"""The one order in which receipts' transactions lock the documents they touch (`domain.lock_order`)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.receipts.domain import CREDIT_NOTE, RECEIPT, lock_order

documents = st.lists(
    st.tuples(st.sampled_from([RECEIPT, CREDIT_NOTE]), st.text(alphabet="RCN-0123456789", min_size=1, max_size=8))
)


class TestLockOrder:
    def test_receipts_come_before_credit_notes_each_by_number(self) -> None:
        touched = [(CREDIT_NOTE, "CN-2"), (RECEIPT, "R-9"), (CREDIT_NOTE, "CN-1"), (RECEIPT, "R-10")]
        assert lock_order(touched) == [
            (RECEIPT, "R-10"),
            (RECEIPT, "R-9"),
            (CREDIT_NOTE, "CN-1"),
            (CREDIT_NOTE, "CN-2"),
        ]

    def test_a_document_touched_twice_is_locked_once(self) -> None:
        assert lock_order([(RECEIPT, "R-1"), (RECEIPT, "R-1")]) == [(RECEIPT, "R-1")]

    @given(documents, documents)
    def test_two_transactions_take_the_documents_they_share_in_the_same_order(
        self, first: list[tuple[str, str]], second: list[tuple[str, str]]
    ) -> None:
        """INVARIANT: no two transactions lock two shared documents in opposite orders (a deadlock needs that)."""
        shared = set(first) & set(second)
        assert [d for d in lock_order(first) if d in shared] == [d for d in lock_order(second) if d in shared]

    @given(documents)
    def test_every_document_touched_is_locked_whatever_the_order_it_was_met_in(
        self, touched: list[tuple[str, str]]
    ) -> None:
        ordered = lock_order(touched)
        assert set(ordered) == set(touched) and len(ordered) == len(set(touched))
        assert lock_order(list(reversed(touched))) == ordered
        assert all(kind == RECEIPT for kind, _ in ordered[: sum(1 for kind, _ in ordered if kind == RECEIPT)])
