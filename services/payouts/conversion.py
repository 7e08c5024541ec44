"""Exchange rates and currency conversion with provenance. Pure: files come in as bytes, rates as values.

Rates are read from the ECB's daily reference rates (the `eurofxref` XML, or its CSV) or from a plain CSV
(`date,base,quote,rate`), or entered by a billing manager. A rate `r` for (base, quote) means 1 base = r quote.
A conversion stores the rate it used, where that rate came from, its as-of date and the rounding; a missing rate
is an error naming the currency pair, never a guess.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from xml.etree import ElementTree

from shared.errors import Rejected
from shared.money import ROUNDING, quantize

# Digits a derived (inverse or cross) rate keeps; the converted amount is computed from this stored rate, so
# anyone can recompute it from the provenance.
RATE_PLACES = Decimal("1E-10")
ECB = "ECB"
ECB_NAMESPACE = "http://www.ecb.int/vocabulary/2002-08-01/eurofxref"
MAX_RATES_FILE = 2 * 1024 * 1024


@dataclass(frozen=True)
class Rate:
    base: str
    quote: str
    rate: Decimal
    as_of: date
    source: str


@dataclass(frozen=True)
class Conversion:
    amount: Decimal
    currency: str
    converted: Decimal
    to_currency: str
    rate: Decimal
    source: str
    as_of: date | None
    rounding: str

    def as_json(self) -> dict[str, str | None]:
        return {
            "amount": format(self.amount, "f"),
            "currency": self.currency,
            "converted": format(self.converted, "f"),
            "to_currency": self.to_currency,
            "rate": format(self.rate, "f"),
            "source": self.source,
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "rounding": self.rounding,
        }


def _candidates(rates: Sequence[Rate], base: str, quote: str, on: date, max_age: timedelta) -> list[Rate]:
    return [r for r in rates if r.base == base and r.quote == quote and on - max_age <= r.as_of <= on]


def _latest(rates: list[Rate]) -> Rate | None:
    # The newest; on the same day a rate a person entered wins over a file's.
    return max(rates, key=lambda r: (r.as_of, not r.source.startswith(ECB)), default=None)


def find_rate(
    rates: Sequence[Rate], base: str, quote: str, *, on: date, max_age: timedelta = timedelta(days=7)
) -> tuple[Decimal, str, date]:
    """The rate for 1 base in quote on `on`: direct, else inverse, else across EUR (the ECB's base)."""
    direct = _latest(_candidates(rates, base, quote, on, max_age))
    if direct is not None:
        return direct.rate, direct.source, direct.as_of
    inverse = _latest(_candidates(rates, quote, base, on, max_age))
    if inverse is not None and inverse.rate != 0:
        return (Decimal(1) / inverse.rate).quantize(RATE_PLACES), f"inverse of {inverse.source}", inverse.as_of
    via_base = _latest(_candidates(rates, "EUR", base, on, max_age)) if base != "EUR" else None
    via_quote = _latest(_candidates(rates, "EUR", quote, on, max_age)) if quote != "EUR" else None
    if via_base is not None and via_quote is not None and via_base.rate != 0:
        rate = (via_quote.rate / via_base.rate).quantize(RATE_PLACES)
        return rate, f"cross via EUR ({via_base.source}, {via_quote.source})", min(via_base.as_of, via_quote.as_of)
    oldest = (on - max_age).isoformat()
    raise Rejected(
        "missing_rate",
        f"no {base}->{quote} exchange rate dated {oldest} to {on.isoformat()}; import or enter one",
        field="rate",
    )


def convert(
    amount: Decimal, currency: str, to_currency: str, rates: Sequence[Rate], *, on: date, max_age: timedelta
) -> Conversion:
    """`amount` in `to_currency`, rounded once to its minor unit, with the rate's provenance."""
    rounding = f"{ROUNDING} to {to_currency}'s minor unit"
    if currency == to_currency:
        return Conversion(
            amount, currency, quantize(amount, to_currency), to_currency, Decimal(1), "same currency", None, rounding
        )
    rate, source, as_of = find_rate(rates, currency, to_currency, on=on, max_age=max_age)
    converted = quantize(amount * rate, to_currency)
    return Conversion(amount, currency, converted, to_currency, rate, source, as_of, rounding)


# --- rate files ---


def _rate(text: str, *, field: str = "rate") -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise Rejected("invalid_rate", f"{text!r} is not a number", field=field) from None
    if not value.is_finite() or value <= 0:
        raise Rejected("invalid_rate", f"a rate is a positive number, not {text!r}", field=field)
    return value


def parse_ecb_xml(data: bytes) -> list[Rate]:
    """The ECB's `eurofxref-daily.xml` (or the 90-day / historical files): `<Cube time=...><Cube currency rate>`."""
    if b"<!DOCTYPE" in data[:4096].upper() or b"<!ENTITY" in data.upper():
        raise Rejected("invalid_rates_file", "rate files may not declare a DOCTYPE or entities", field="file")
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise Rejected("invalid_rates_file", f"not well-formed XML: {exc}", field="file") from None
    rates: list[Rate] = []
    for day in root.iter(f"{{{ECB_NAMESPACE}}}Cube"):
        when = day.get("time")
        if when is None:
            continue
        try:
            as_of = date.fromisoformat(when)
        except ValueError:
            raise Rejected("invalid_rates_file", f"bad date {when!r}", field="file") from None
        for cube in day:
            currency, rate = cube.get("currency"), cube.get("rate")
            if currency and rate:
                rates.append(Rate("EUR", currency.upper(), _rate(rate, field="file"), as_of, ECB))
    if not rates:
        raise Rejected("invalid_rates_file", "no ECB reference rates found in the file", field="file")
    return rates


def _ecb_date(text: str) -> date:
    text = text.strip()
    for pattern in ("%d %B %Y", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, pattern).date()
        except ValueError:
            continue
    raise Rejected("invalid_rates_file", f"bad date {text!r}", field="file")


def parse_rates_csv(text: str) -> list[Rate]:
    """The ECB's CSV (`Date, USD, JPY, ...` then one row per day) or a plain `date,base,quote,rate` CSV."""
    rows = [[cell.strip() for cell in row] for row in csv.reader(io.StringIO(text)) if any(c.strip() for c in row)]
    if not rows:
        raise Rejected("invalid_rates_file", "the file is empty", field="file")
    header = [h.lower() for h in rows[0]]
    rates: list[Rate] = []
    if header[:4] == ["date", "base", "quote", "rate"]:
        for number, row in enumerate(rows[1:], start=2):
            if len(row) < 4:
                raise Rejected("invalid_rates_file", f"row {number}: four columns expected", field="file")
            base, quote = row[1].upper(), row[2].upper()
            rates.append(Rate(base, quote, _rate(row[3], field="file"), _ecb_date(row[0]), "CSV"))
    elif header and header[0] == "date":
        currencies = [h.upper() for h in rows[0][1:]]
        for row in rows[1:]:
            as_of = _ecb_date(row[0])
            for currency, cell in zip(currencies, row[1:], strict=False):
                if currency and cell and cell.upper() != "N/A":
                    rates.append(Rate("EUR", currency, _rate(cell, field="file"), as_of, ECB))
    else:
        raise Rejected(
            "invalid_rates_file", "expected the ECB CSV (Date, USD, ...) or date,base,quote,rate", field="file"
        )
    if not rates:
        raise Rejected("invalid_rates_file", "no rates found in the file", field="file")
    return rates


def parse_rates_file(data: bytes) -> list[Rate]:
    """An ECB XML or a CSV of rates, told apart by content."""
    if len(data) > MAX_RATES_FILE:
        raise Rejected("file_too_large", f"rate files are at most {MAX_RATES_FILE} bytes", field="file")
    if data.lstrip().startswith(b"<"):
        return parse_ecb_xml(data)
    try:
        return parse_rates_csv(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise Rejected("invalid_rates_file", "the file is not UTF-8 text", field="file") from None
