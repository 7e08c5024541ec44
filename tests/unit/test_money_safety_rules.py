"""The pure rules behind reversals, disputes, adjustments and credit balances, one class per rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.credit_notes import domain as credit
from services.gateway_bridge import domain as gateway
from services.kpi import projections as kpi_projections
from services.payments import domain as pay
from services.payments import online as payments_online
from shared import ledger
from shared.contracts import PaymentStatus, counts_as_collected
from shared.errors import Rejected
from shared.money import percentage

D = Decimal
NOW = datetime(2025, 4, 20, tzinfo=UTC)


class TestOneCollectedRule:
    """INVARIANT: payments and kpi never disagree on whether a payment's money is collected."""

    def test_payments_and_kpi_use_the_one_shared_rule(self) -> None:
        assert vars(payments_online)["counts_as_collected"] is counts_as_collected
        assert vars(kpi_projections)["counts_as_collected"] is counts_as_collected

    @pytest.mark.parametrize("status", list(PaymentStatus))
    def test_every_status_is_decided_once(self, status: PaymentStatus) -> None:
        expected = status in (PaymentStatus.POSTED, PaymentStatus.DISPUTED)
        assert counts_as_collected(status) is expected
        assert counts_as_collected(status.value) is expected

    def test_a_won_dispute_counts_again_and_a_lost_one_does_not(self) -> None:
        assert counts_as_collected(pay.status_after_dispute(pay.DisputeOutcome.WON))
        assert not counts_as_collected(pay.status_after_dispute(pay.DisputeOutcome.LOST))


class TestLedger:
    def test_an_overpayments_credit_leaves_the_settlement_alone(self) -> None:
        assert ledger.settled_after_credit(D("25.00"), D("30.00"), refunded=D(0), credited=D("5.00")) == D("25.00")

    def test_staff_credit_on_a_settled_payment_comes_out_of_its_settlement(self) -> None:
        """INVARIANT: the same money never both settles an item and sits as credit."""
        assert ledger.settled_after_credit(D("100.00"), D("100.00"), refunded=D(0), credited=D("40.00")) == D("60.00")

    @pytest.mark.parametrize(
        ("refund", "applied", "unused", "settled", "credit_to_void"),
        [
            (D("10.00"), D("145.50"), D("4.50"), D("5.50"), D("4.50")),
            (D("3.00"), D("145.50"), D("4.50"), D("0.00"), D("3.00")),
            (D("30.00"), D("25.00"), D("0.00"), D("25.00"), D("5.00")),
        ],
    )
    def test_a_refund_takes_unused_credit_first_then_the_settlement_then_applied_credit(
        self, refund: Decimal, applied: Decimal, unused: Decimal, settled: Decimal, credit_to_void: Decimal
    ) -> None:
        split = ledger.refund_split(refund, applied=applied, unused_credit=unused)
        assert (split.settled_reduction, split.credit_to_void) == (settled, credit_to_void)


class TestVoidingCredit:
    def note(self, amount: str, applied: str = "0.00") -> credit.CreditNote:
        note = credit.CreditNote(amount=D(amount), expires_at=NOW + timedelta(days=365))
        return note.apply(D(applied), item_outstanding=D("1000"), now=NOW)[0] if D(applied) else note

    def test_everything_goes_back_unused_voided_and_applications_reversed(self) -> None:
        notes = [("CN-1", self.note("5.00", "3.00"))]
        applications = [credit.Application("A-1", "CN-1", D("3.00"), NOW)]
        [void] = credit.void_plan(notes, applications, None)
        assert (void.voided, void.reversed) == (D("2.00"), (("A-1", D("3.00")),))
        assert (void.after.status, void.after.remaining, void.after.applied) == (credit.Status.VOIDED, D(0), D(0))

    def test_a_partial_give_back_takes_unused_credit_before_any_application(self) -> None:
        notes = [("CN-1", self.note("5.00", "3.00")), ("CN-2", self.note("4.00"))]
        applications = [credit.Application("A-1", "CN-1", D("3.00"), NOW)]
        plan = {v.credit_note_number: v for v in credit.void_plan(notes, applications, D("6.00"))}
        assert plan["CN-1"].voided == D("2.00") and plan["CN-1"].after.status is credit.Status.VOIDED
        assert plan["CN-2"].voided == D("4.00")
        assert sum((v.voided for v in plan.values()), D(0)) == D("6.00")
        assert all(not v.reversed for v in plan.values())

    def test_a_voided_note_cannot_be_applied(self) -> None:
        voided, _ = self.note("5.00").void()
        with pytest.raises(Rejected) as refused:
            voided.apply(None, item_outstanding=D("10.00"), now=NOW)
        assert refused.value.code == "credit_note_voided"

    def test_a_refund_pays_out_the_unused_balance_once(self) -> None:
        refunded, amount = self.note("5.00", "1.00").refund()
        assert (amount, refunded.status, refunded.remaining) == (D("4.00"), credit.Status.REFUNDED, D(0))
        with pytest.raises(Rejected):
            refunded.refund()


class TestAutoApply:
    def test_the_note_expiring_first_is_used_first_up_to_what_the_bill_owes(self) -> None:
        later = credit.CreditNote(amount=D("10.00"), expires_at=NOW + timedelta(days=300))
        sooner = credit.CreditNote(amount=D("15.00"), expires_at=NOW + timedelta(days=30))
        assert credit.oldest_first([("CN-1", later), ("CN-2", sooner)], D("20.00"), NOW) == [
            ("CN-2", D("15.00")),
            ("CN-1", D("5.00")),
        ]

    def test_expired_voided_and_pending_credit_is_never_used(self) -> None:
        pending = credit.CreditNote(
            amount=D("10.00"), expires_at=NOW + timedelta(days=1), status=credit.Status.PENDING_APPROVAL
        )
        old = credit.CreditNote(amount=D("10.00"), expires_at=NOW - timedelta(days=1))
        assert credit.oldest_first([("CN-1", pending), ("CN-2", old)], D("20.00"), NOW) == []


class TestAdjustments:
    def test_a_move_reverses_the_old_allocation_and_settles_the_new_item(self) -> None:
        plan = pay.plan_adjustment(
            pay.AdjustmentKind.MOVE, "Posted", pay.PaymentLedger(D("25.00"), D("25.00")), target_outstanding=D("75.00")
        )
        assert (plan.reversed, plan.applied, plan.size) == (D("25.00"), D("25.00"), D("25.00"))

    def test_a_move_that_would_overpay_the_new_item_is_refused(self) -> None:
        with pytest.raises(Rejected) as refused:
            pay.plan_adjustment(
                pay.AdjustmentKind.MOVE,
                "Posted",
                pay.PaymentLedger(D("145.50"), D("145.50")),
                target_outstanding=D("25.00"),
            )
        assert refused.value.code == "adjustment_overpays"

    def test_an_amount_correction_is_sized_by_the_difference(self) -> None:
        plan = pay.plan_adjustment(
            pay.AdjustmentKind.AMOUNT,
            "Posted",
            pay.PaymentLedger(D("150.00"), D("145.50"), credited=D("4.50")),
            target_outstanding=D("0.00"),
            new_amount=D("120.00"),
            same_item=True,
        )
        assert (plan.amount, plan.applied, plan.size) == (D("120.00"), D("115.50"), D("30.00"))

    @pytest.mark.parametrize("status", ["Disputed", "Cancelled", "Refunded", "Charged back", "Pending"])
    def test_only_a_posted_payment_is_adjusted(self, status: str) -> None:
        with pytest.raises(Rejected):
            pay.plan_adjustment(
                pay.AdjustmentKind.MOVE, status, pay.PaymentLedger(D("1"), D("1")), target_outstanding=D("5")
            )


class TestDisputes:
    def test_open_under_review_won_or_lost_and_never_again(self) -> None:
        assert pay.dispute_moves("Open", pay.DisputeStatus.UNDER_REVIEW)
        assert pay.dispute_moves("Under review", pay.DisputeStatus.LOST)
        assert not pay.dispute_moves("Won", pay.DisputeStatus.LOST)
        assert not pay.dispute_moves("Under review", pay.DisputeStatus.UNDER_REVIEW)

    @pytest.mark.parametrize(
        ("event", "status", "ours"),
        [
            ("charge.dispute.updated", "under_review", "dispute_under_review"),
            ("charge.dispute.closed", "won", "dispute_won"),
            ("charge.dispute.closed", "warning_closed", "dispute_won"),
            ("charge.dispute.closed", "lost", "dispute_lost"),
        ],
    )
    def test_stripes_dispute_statuses_map_to_ours(self, event: str, status: str, ours: str) -> None:
        assert gateway.charge_status(event, {"status": status}) == ours

    def test_a_closed_dispute_still_under_review_is_unroutable(self) -> None:
        with pytest.raises(gateway.Unroutable):
            gateway.charge_status("charge.dispute.closed", {"status": "under_review"})


class TestOnePercentageRule:
    def test_one_of_sixteen_is_six_point_three_everywhere(self) -> None:
        """The API showed 6.3% and the PDF 6.2%: one rule now, half up."""
        assert percentage(D("1.00"), D("16.00")) == D("6.3")
        assert credit.usage_percentage(D("1.00"), D("16.00")) == D("6.3")
