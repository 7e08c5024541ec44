"""Money rules: banker's rounding, minor units, strict parsing and display formatting."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.money import ROUNDING, format_money, minor_units, parse_amount, quantize


class TestMinorUnits:
    @pytest.mark.parametrize(
        ("currency", "digits"),
        [("USD", 2), ("EUR", 2), ("JPY", 0), ("KRW", 0), ("KWD", 3), ("BHD", 3), ("OMR", 3)],
    )
    def test_known_currencies_have_their_iso_4217_minor_units(self, currency: str, digits: int) -> None:
        assert minor_units(currency) == digits

    def test_unknown_currency_defaults_to_two_digits(self) -> None:
        assert minor_units("XYZ") == 2

    def test_currency_code_is_case_insensitive(self) -> None:
        assert minor_units("jpy") == 0
        assert minor_units("kwd") == 3


class TestQuantize:
    def test_rounding_rule_is_bankers_rounding(self) -> None:
        assert ROUNDING == "ROUND_HALF_EVEN"

    @pytest.mark.parametrize(
        ("amount", "expected"),
        [
            ("0.125", "0.12"),
            ("0.135", "0.14"),
            ("0.145", "0.14"),
            ("0.155", "0.16"),
            ("2.675", "2.68"),
            ("-0.125", "-0.12"),
            ("-0.135", "-0.14"),
            ("0.1251", "0.13"),
            ("145.5", "145.50"),
        ],
    )
    def test_half_cents_round_to_the_even_neighbour_in_usd(self, amount: str, expected: str) -> None:
        result = quantize(Decimal(amount), "USD")
        assert result == Decimal(expected)
        assert str(result) == expected

    @pytest.mark.parametrize(("amount", "expected"), [("2.5", "2"), ("3.5", "4"), ("1200.4", "1200")])
    def test_yen_rounds_to_whole_units_half_even(self, amount: str, expected: str) -> None:
        assert str(quantize(Decimal(amount), "JPY")) == expected

    @pytest.mark.parametrize(("amount", "expected"), [("1.2345", "1.234"), ("1.2355", "1.236"), ("1", "1.000")])
    def test_dinar_rounds_to_three_digits_half_even(self, amount: str, expected: str) -> None:
        assert str(quantize(Decimal(amount), "KWD")) == expected


class TestParseAmount:
    def test_accepts_a_two_decimal_string(self) -> None:
        value = parse_amount("145.50", "USD")
        assert value == Decimal("145.50")
        assert str(value) == "145.50"

    def test_pads_fewer_decimals_to_the_currency_minor_unit(self) -> None:
        assert str(parse_amount("145.5", "USD")) == "145.50"
        assert str(parse_amount("145", "USD")) == "145.00"

    def test_accepts_decimal_and_int_inputs(self) -> None:
        assert parse_amount(Decimal("12.30"), "USD") == Decimal("12.30")
        assert str(parse_amount(7, "USD")) == "7.00"

    def test_accepts_whole_yen_and_three_digit_dinars(self) -> None:
        assert str(parse_amount("1200", "JPY")) == "1200"
        assert str(parse_amount("1.234", "KWD")) == "1.234"

    def test_accepts_negative_amounts(self) -> None:
        assert parse_amount("-4.50", "USD") == Decimal("-4.50")

    def test_rejects_a_float(self) -> None:
        with pytest.raises(ValueError, match="float"):
            parse_amount(1.5, "USD")  # type: ignore[arg-type]

    @pytest.mark.parametrize("text", ["NaN", "nan", "sNaN", "-NaN"])
    def test_rejects_nan(self, text: str) -> None:
        with pytest.raises(ValueError, match=r"not a (decimal|finite) amount"):
            parse_amount(text, "USD")

    @pytest.mark.parametrize("text", ["Infinity", "-Infinity", "inf", "-inf"])
    def test_rejects_infinity(self, text: str) -> None:
        with pytest.raises(ValueError, match=r"not a (decimal|finite) amount"):
            parse_amount(text, "USD")

    def test_rejects_a_nan_decimal_object(self) -> None:
        with pytest.raises(ValueError):
            parse_amount(Decimal("NaN"), "USD")

    @pytest.mark.parametrize("text", ["", "abc", "12abc", "1.2.3", "$145.50", "1,000.00", "145.50 USD", "--1", "0x10"])
    def test_rejects_garbage(self, text: str) -> None:
        with pytest.raises(ValueError, match="not a decimal amount"):
            parse_amount(text, "USD")

    def test_rejects_python_underscore_digit_separators(self) -> None:
        # Decimal("1_000.00") is valid Python syntax, but not a decimal amount string.
        with pytest.raises(ValueError):
            parse_amount("1_000.00", "USD")

    @pytest.mark.parametrize(
        ("text", "currency"),
        [("145.505", "USD"), ("0.001", "USD"), ("1.5", "JPY"), ("1200.0", "JPY"), ("1.2345", "KWD")],
    )
    def test_rejects_more_decimals_than_the_currency_has(self, text: str, currency: str) -> None:
        with pytest.raises(ValueError, match="decimal places"):
            parse_amount(text, currency)

    def test_rejects_too_many_decimals_in_a_decimal_object(self) -> None:
        with pytest.raises(ValueError, match="decimal places"):
            parse_amount(Decimal("0.125"), "USD")


class TestFormatMoney:
    @pytest.mark.parametrize(
        ("amount", "currency", "expected"),
        [
            ("145.50", "USD", "$145.50"),
            ("1145.50", "USD", "$1,145.50"),
            ("1234567.89", "USD", "$1,234,567.89"),
            ("-4.50", "USD", "-$4.50"),
            ("0", "USD", "$0.00"),
            ("1200", "JPY", "¥1,200"),
            ("1", "XYZ", "XYZ 1.00"),
            ("10.5", "EUR", "€10.50"),
            ("10.5", "GBP", "£10.50"),
            ("1234.5", "KWD", "KWD 1,234.500"),
            ("145.5", "usd", "$145.50"),
        ],
    )
    def test_renders_symbol_grouping_and_minor_units(self, amount: str, currency: str, expected: str) -> None:
        assert format_money(Decimal(amount), currency) == expected

    def test_rounds_half_even_before_rendering(self) -> None:
        assert format_money(Decimal("0.125"), "USD") == "$0.12"
        assert format_money(Decimal("0.135"), "USD") == "$0.14"
        assert format_money(Decimal("2.5"), "JPY") == "¥2"

    def test_an_amount_that_rounds_to_zero_has_no_minus_sign(self) -> None:
        assert format_money(Decimal("-0.001"), "USD") == "$0.00"


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


@given(
    st.decimals(
        min_value=Decimal("-1000000000"),
        max_value=Decimal("1000000000"),
        places=2,
        allow_nan=False,
        allow_infinity=False,
    )
)
def test_format_of_parsed_two_place_amount_round_trips_the_digits(x: Decimal) -> None:
    text = str(x)
    parsed = parse_amount(text, "USD")
    assert parsed == x
    rendered = format_money(parsed, "USD")
    assert rendered.lstrip("-").startswith("$")
    assert rendered.startswith("-") == (x < 0)
    assert _digits(rendered) == _digits(format(x.quantize(Decimal("0.01")), "f"))
    # Removing the symbol and the grouping gives the original amount back.
    assert Decimal(rendered.replace("$", "").replace(",", "")) == x
