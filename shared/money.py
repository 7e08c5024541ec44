"""Money: `Decimal` quantised to the currency's minor unit, never float."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TypedDict, overload

from pydantic import BaseModel, ConfigDict, Field

# Plain decimal notation only: no exponents, digit separators, spaces or non-ASCII digits.
_DECIMAL_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?")

# ISO 4217 minor units for the currencies a utility is likely to bill in; others default to 2.
_MINOR_UNITS = {"JPY": 0, "KRW": 0, "CLP": 0, "ISK": 0, "BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3, "TND": 3}
_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "INR": "₹", "CAD": "CA$", "AUD": "A$"}

# Banker's rounding: the rule accounting systems use so that rounding errors do not drift one way.
ROUNDING = ROUND_HALF_EVEN


def minor_units(currency: str) -> int:
    """Digits after the decimal point for a currency."""
    return _MINOR_UNITS.get(currency.upper(), 2)


def quantize(amount: Decimal, currency: str) -> Decimal:
    """Round an amount to the currency's minor unit."""
    exponent = Decimal(1).scaleb(-minor_units(currency))
    return amount.quantize(exponent, rounding=ROUNDING)


def parse_amount(text: str | Decimal | int, currency: str) -> Decimal:
    """Parse a decimal string exactly; reject floats, NaN, infinities and more digits than the currency has."""
    if isinstance(text, float):  # pragma: no cover - guarded by typing, kept for callers without it
        raise ValueError("amounts must be decimal strings, not floats")
    if isinstance(text, str) and not _DECIMAL_TEXT.fullmatch(text):
        raise ValueError(f"not a decimal amount: {text!r}")
    try:
        value = Decimal(text) if not isinstance(text, Decimal) else text
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal amount: {text!r}") from exc
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {text!r}")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > minor_units(currency):
        raise ValueError(f"at most {minor_units(currency)} decimal places for {currency}")
    return quantize(value, currency)


def percentage(part: Decimal, whole: Decimal) -> Decimal:
    """`part` of `whole` in percent with one decimal, rounded half up as people read a percentage (1.00 of 16.00 is
    6.3%). The one rule for every share shown to people (credit-note usage on screens and documents)."""
    if whole <= 0:
        return Decimal("0.0")
    return (part * 100 / whole).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def format_money(amount: Decimal, currency: str) -> str:
    """Render an amount with its currency symbol and the currency's decimals, e.g. `$1,145.50`."""
    value = quantize(amount, currency)
    symbol = _SYMBOLS.get(currency.upper(), currency.upper() + " ")
    sign = "-" if value < 0 else ""
    return f"{sign}{symbol}{abs(value):,.{minor_units(currency)}f}"


class MoneyJson(TypedDict):
    """The one JSON shape of an amount in every response: exact text, currency, and what staff read."""

    amount: str
    currency: str
    display: str


@overload
def money_json(amount: Decimal, currency: str) -> MoneyJson: ...
@overload
def money_json(amount: None, currency: str) -> None: ...
def money_json(amount: Decimal | None, currency: str) -> MoneyJson | None:
    """`{"amount": "145.50", "currency": "USD", "display": "$145.50"}`; None stays None (an absent amount)."""
    if amount is None:
        return None
    value = quantize(amount, currency)
    return {"amount": format(value, "f"), "currency": currency, "display": format_money(value, currency)}


class MoneyView(BaseModel):
    """`money_json` as a response model, for routes that declare their response shape."""

    model_config = ConfigDict(frozen=True)

    amount: str = Field(description="Decimal string in the currency's minor unit.", examples=["145.50"])
    currency: str = Field(min_length=3, max_length=3, examples=["USD"])
    display: str = Field(description="Rendered for people: symbol, grouping, decimals.", examples=["$145.50"])

    @classmethod
    def of(cls, amount: Decimal, currency: str) -> MoneyView:
        return cls(**money_json(amount, currency))
