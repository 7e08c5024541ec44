"""The gateway bridge's pure rules: the seed's status mappings, the forward-only order, reading Stripe objects."""

from __future__ import annotations

import functools
import itertools
import random
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.gateway_bridge import domain
from services.gateway_bridge.domain import NOT_APPLICABLE, StatusView
from shared.contracts.events import PaymentType


def final_status(statuses: list[str]) -> str | None:
    """What a payment intent's row ends at after applying these statuses in turn under the forward-only rule."""
    return functools.reduce(lambda state, status: domain.later(state, status, domain.PAYMENT_RANK), statuses, None)


class TestSeedStatusMappings:
    """AC18: online gateway statuses map exactly as the seed's tables say."""

    @pytest.mark.parametrize(
        ("stripe_event", "webhook", "settlement"),
        [
            ("payment_intent.succeeded", "In Settlement", "In Progress"),
            ("payment_intent.payment_failed", "Failed", NOT_APPLICABLE),
            ("payment_intent.processing", "Not Confirmed", NOT_APPLICABLE),
        ],
    )
    def test_ac18_payment_intent_events_map_to_webhook_and_settlement_status(
        self, stripe_event: str, webhook: str, settlement: str
    ) -> None:
        status = domain.PAYMENT_INTENT_EVENTS[stripe_event]
        assert domain.payment_view(status) == StatusView(webhook, settlement)

    def test_ac18_payout_created_is_in_settlement_in_progress(self) -> None:
        assert domain.current_view("succeeded", "created") == StatusView("In Settlement", "In Progress")

    def test_ac18_payout_paid_is_settled_success(self) -> None:
        assert domain.current_view("succeeded", "paid") == StatusView("Settled", "Success")

    def test_ac18_payout_failed_keeps_the_previous_webhook_status_and_fails_the_settlement(self) -> None:
        assert domain.SETTLEMENT_WEBHOOK_STATUS["failed"] is None
        assert domain.current_view("succeeded", "failed") == StatusView("In Settlement", "Failed")

    def test_refund_and_dispute_are_payment_statuses_with_their_own_webhook_status(self) -> None:
        assert domain.payment_view("refunded").webhook_status == "Refunded"
        assert domain.payment_view("disputed").webhook_status == "Disputed"

    def test_a_refund_speaks_louder_than_a_payout(self) -> None:
        assert domain.current_view("refunded", "paid").webhook_status == "Refunded"

    def test_every_status_has_a_view_and_a_rank(self) -> None:
        assert set(domain.PAYMENT_STATUSES) == set(domain.PAYMENT_RANK)
        assert set(domain.SETTLEMENT_STATUS) == set(domain.PAYOUT_RANK) == set(domain.SETTLEMENT_WEBHOOK_STATUS)


class TestEventKinds:
    @pytest.mark.parametrize(
        ("event_type", "kind"),
        [
            ("payment_intent.succeeded", "payment"),
            ("payment_intent.payment_failed", "payment"),
            ("payment_intent.processing", "payment"),
            ("charge.refunded", "charge"),
            ("charge.dispute.created", "charge"),
            ("payout.created", "payout"),
            ("payout.paid", "payout"),
            ("payout.failed", "payout"),
            ("customer.created", "ignored"),
            ("payment_intent.created", "ignored"),
            ("charge.succeeded", "ignored"),
        ],
    )
    def test_each_stripe_event_type_has_one_kind(self, event_type: str, kind: str) -> None:
        assert domain.event_kind(event_type) == kind

    @pytest.mark.parametrize(
        ("event", "kind"),
        [
            ({"type": "payout.paid", "data": {"object": {"id": "po_1", "metadata": {}}}}, "payout"),
            ({"type": "payout.paid", "account": "acct_1", "data": {"object": {"id": "po_1"}}}, "outgoing"),
            ({"type": "payout.created", "account": "acct_1", "data": {"object": {"id": "po_1"}}}, "ignored"),
            ({"type": "payout.canceled", "data": {"object": {"id": "po_1"}}}, "ignored"),
            (
                {"type": "payout.failed", "data": {"object": {"id": "po_1", "metadata": {"paydesk_payout_id": "P"}}}},
                "outgoing",
            ),
            ({"type": "transfer.created", "data": {"object": {"id": "tr_1"}}}, "outgoing"),
            ({"type": "transfer.reversed", "data": {"object": {"id": "tr_1"}}}, "outgoing"),
            ({"type": "transfer.updated", "data": {"object": {"id": "tr_1"}}}, "ignored"),
        ],
    )
    def test_money_going_out_is_told_from_the_utilitys_own_payouts(self, event: dict[str, Any], kind: str) -> None:
        assert domain.event_kind(event["type"], event) == kind

    def test_a_payouts_listing_leaves_out_its_own_transaction_and_nets_to_its_amount(self) -> None:
        rows = [
            {
                "id": "txn_1",
                "type": "charge",
                "amount": 10000,
                "fee": 320,
                "net": 9680,
                "currency": "usd",
                "source": {"id": "ch_1", "payment_intent": "pi_1"},
            },
            {
                "id": "txn_2",
                "type": "refund",
                "amount": -2000,
                "fee": 0,
                "net": -2000,
                "currency": "usd",
                "source": "re_1",
            },
            {
                "id": "txn_3",
                "type": "payout",
                "amount": -7680,
                "fee": 0,
                "net": -7680,
                "currency": "usd",
                "source": "po_1",
            },
        ]
        listed = domain.payout_transactions("po_1", rows)
        assert [t.balance_transaction_id for t in listed] == ["txn_1", "txn_2"]
        assert sum(t.net.value for t in listed) == Decimal("76.80")
        assert (listed[0].payment_intent_id, listed[0].source_id, listed[0].fee.value) == (
            "pi_1",
            "ch_1",
            Decimal("3.20"),
        )
        assert (listed[1].amount.value, listed[1].payment_intent_id) == (Decimal("-20.00"), None)

    def test_a_full_refund_and_a_partial_refund_differ(self) -> None:
        assert domain.charge_status("charge.refunded", {"refunded": True}) == "refunded"
        assert domain.charge_status("charge.refunded", {"refunded": False}) == "partially_refunded"
        assert domain.charge_status("charge.dispute.created", {}) == "disputed"


class TestForwardOnly:
    """INVARIANT: a payment's status never moves back, whatever order Stripe delivers events in."""

    def test_a_late_processing_never_overwrites_succeeded(self) -> None:
        assert domain.later("succeeded", "processing", domain.PAYMENT_RANK) == "succeeded"
        assert not domain.moves_forward("succeeded", "processing", domain.PAYMENT_RANK)

    def test_failed_after_succeeded_does_not_unpost(self) -> None:
        assert domain.later("succeeded", "failed", domain.PAYMENT_RANK) == "succeeded"

    def test_a_retried_payment_goes_from_failed_to_succeeded(self) -> None:
        assert domain.later("failed", "succeeded", domain.PAYMENT_RANK) == "succeeded"

    def test_the_same_status_again_is_not_a_move(self) -> None:
        assert not domain.moves_forward("succeeded", "succeeded", domain.PAYMENT_RANK)

    def test_anything_is_a_move_from_nothing(self) -> None:
        assert all(domain.moves_forward(None, s, domain.PAYMENT_RANK) for s in domain.PAYMENT_RANK)

    def test_a_paid_payout_can_still_fail(self) -> None:
        assert domain.later("paid", "failed", domain.PAYOUT_RANK) == "failed"
        assert domain.later("paid", "created", domain.PAYOUT_RANK) == "paid"

    @given(st.lists(st.sampled_from(sorted(domain.PAYMENT_RANK)), min_size=1, max_size=12), st.randoms())
    def test_the_final_status_is_the_same_in_every_order_and_with_duplicates(
        self, statuses: list[str], rnd: random.Random
    ) -> None:
        shuffled = statuses + rnd.sample(statuses, k=len(statuses) // 2)
        rnd.shuffle(shuffled)
        expected = max(statuses, key=domain.PAYMENT_RANK.__getitem__)
        assert final_status(shuffled) == expected

    def test_every_permutation_of_a_full_life_ends_refunded(self) -> None:
        life = ["processing", "failed", "succeeded", "disputed", "refunded"]
        assert {final_status(list(p)) for p in itertools.permutations(life)} == {"refunded"}


class TestReadingStripeObjects:
    def test_metadata_gives_account_type_and_item(self) -> None:
        route = domain.route_from_metadata(
            {"account_number": "WU-10001", "payment_type": "Bill", "item_reference": "INV-2025-001234"}
        )
        assert route == domain.PaymentRoute("WU-10001", PaymentType.BILL, "INV-2025-001234")

    @pytest.mark.parametrize("missing", ["account_number", "payment_type", "item_reference"])
    def test_missing_metadata_names_the_field(self, missing: str) -> None:
        meta = {"account_number": "WU-10001", "payment_type": "bill", "item_reference": "INV-1"}
        del meta[missing]
        with pytest.raises(domain.Unroutable, match=rf"metadata\.{missing} missing"):
            domain.route_from_metadata(meta)

    def test_an_unknown_payment_type_is_named(self) -> None:
        with pytest.raises(domain.Unroutable, match=r"metadata\.payment_type must be one of"):
            domain.route_from_metadata({"account_number": "A", "payment_type": "gift", "item_reference": "X"})

    def test_no_metadata_at_all(self) -> None:
        with pytest.raises(domain.Unroutable, match="metadata missing"):
            domain.route_from_metadata(None)

    @pytest.mark.parametrize(
        ("minor", "currency", "expected"),
        [
            (14550, "usd", Decimal("145.50")),
            (500, "jpy", Decimal("500")),
            (1234, "kwd", Decimal("1.234")),
            (0, "usd", Decimal("0.00")),
        ],
    )
    def test_minor_units_become_decimal_money(self, minor: int, currency: str, expected: Decimal) -> None:
        amount = domain.from_minor_units(minor, currency)
        assert amount.value == expected
        assert str(amount.value) == str(expected)
        assert amount.currency == currency.upper()

    @pytest.mark.parametrize(
        ("minor", "currency"), [(1.5, "usd"), (-1, "usd"), (True, "usd"), (100, "us"), (100, None)]
    )
    def test_bad_amounts_are_unroutable_not_crashes(self, minor: object, currency: object) -> None:
        with pytest.raises(domain.Unroutable):
            domain.from_minor_units(minor, currency)

    def test_stripe_time_is_aware_utc(self) -> None:
        assert domain.stripe_time(1745107200) == datetime(2025, 4, 20, tzinfo=UTC)
        with pytest.raises(domain.Unroutable):
            domain.stripe_time("1745107200")

    def test_expandable_fields_give_their_id_either_way(self) -> None:
        assert domain.object_id("pi_1", "pi_") == "pi_1"
        assert domain.object_id({"id": "pi_1", "object": "payment_intent"}, "pi_") == "pi_1"
        assert domain.object_id("ch_1", "pi_") is None
        assert domain.object_id(None, "pi_") is None

    def test_a_payout_settles_its_charges_only(self) -> None:
        transactions: list[dict[str, Any]] = [
            {"type": "charge", "source": {"id": "ch_1", "object": "charge", "payment_intent": "pi_1"}},
            {"type": "payment", "source": {"id": "py_2", "object": "charge", "payment_intent": "pi_2"}},
            {"type": "charge", "source": {"id": "ch_3", "object": "charge", "payment_intent": None}},
            {"type": "stripe_fee", "source": None},
            {"type": "refund", "source": {"id": "re_1", "charge": "ch_1"}},
            {"type": "payout", "source": "po_1"},
        ]
        assert domain.settlement_items(transactions) == [
            domain.SettlementItem("ch_1", "pi_1"),
            domain.SettlementItem("py_2", "pi_2"),
            domain.SettlementItem("ch_3", None),
        ]


class TestNoCardNumbers:
    def test_a_full_card_number_is_masked_to_its_last_four(self) -> None:
        text, count = domain.mask_card_numbers('{"note": "card 4242 4242 4242 4242 and 4000056655665556"}')
        assert count == 2
        assert "4242 4242 4242 4242" not in text and "4000056655665556" not in text
        assert "************4242" in text and "************5556" in text

    def test_ids_timestamps_amounts_and_last4_are_left_alone(self) -> None:
        body = '{"created": 1745107200, "amount": 14550, "last4": "4242", "id": "pi_3PqRsT2eZvKYlo2C1abc"}'
        assert domain.mask_card_numbers(body) == (body, 0)

    def test_a_long_number_failing_luhn_is_not_a_card(self) -> None:
        assert domain.mask_card_numbers("4242424242424241")[1] == 0
