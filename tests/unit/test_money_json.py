"""The one money JSON shape every response uses."""

from __future__ import annotations

from decimal import Decimal

import pytest

from shared.money import MoneyView, money_json


class TestMoneyJson:
    def test_an_amount_becomes_text_currency_and_display(self) -> None:
        assert money_json(Decimal("145.5"), "USD") == {"amount": "145.50", "currency": "USD", "display": "$145.50"}

    def test_large_amounts_keep_every_digit_and_group_the_display(self) -> None:
        assert money_json(Decimal("1234567890.12"), "USD") == {
            "amount": "1234567890.12",
            "currency": "USD",
            "display": "$1,234,567,890.12",
        }

    @pytest.mark.parametrize(
        ("currency", "amount", "display"),
        [("JPY", "1500", "¥1,500"), ("KWD", "12.345", "KWD 12.345"), ("EUR", "0.10", "€0.10")],
    )
    def test_the_amount_has_the_currencys_own_decimals(self, currency: str, amount: str, display: str) -> None:
        shown = money_json(Decimal(amount), currency)
        assert (shown["amount"], shown["display"]) == (amount, display)

    def test_a_negative_amount_keeps_its_sign_in_both_texts(self) -> None:
        assert money_json(Decimal("-4.5"), "USD") == {"amount": "-4.50", "currency": "USD", "display": "-$4.50"}

    def test_no_amount_is_no_object(self) -> None:
        assert money_json(None, "USD") is None

    def test_the_amount_is_never_in_exponent_notation(self) -> None:
        assert money_json(Decimal("0E-8"), "USD")["amount"] == "0.00"
        assert money_json(Decimal("1E+3"), "USD")["amount"] == "1000.00"


class TestMoneyView:
    def test_the_model_serialises_to_the_same_shape(self) -> None:
        assert MoneyView.of(Decimal("145.50"), "USD").model_dump() == money_json(Decimal("145.50"), "USD")
