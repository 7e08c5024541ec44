"""Exchange rates from the ECB's files or a CSV, and conversion with provenance (pure)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.payouts.conversion import Rate, convert, find_rate, parse_rates_file
from shared.errors import Rejected

D = Decimal
DAY = date(2025, 4, 30)
WEEK = timedelta(days=7)

ECB_DAILY = b"""<?xml version="1.0" encoding="UTF-8"?>
<gesmes:Envelope xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01" xmlns="http://www.ecb.int/vocabulary/2002-08-01/eurofxref">
  <gesmes:subject>Reference rates</gesmes:subject>
  <gesmes:Sender><gesmes:name>European Central Bank</gesmes:name></gesmes:Sender>
  <Cube>
    <Cube time='2025-04-30'>
      <Cube currency='USD' rate='1.1373'/>
      <Cube currency='JPY' rate='162.88'/>
      <Cube currency='GBP' rate='0.85058'/>
    </Cube>
  </Cube>
</gesmes:Envelope>
"""

ECB_CSV = b"Date, USD, JPY, BGN, CYP, GBP, \n30 April 2025, 1.1373, 162.88, 1.9558, N/A, 0.85058, \n"


class TestRateFiles:
    def test_the_ecb_daily_xml_gives_euro_rates_for_its_day(self):
        rates = parse_rates_file(ECB_DAILY)
        assert Rate("EUR", "USD", D("1.1373"), DAY, "ECB") in rates
        assert {r.quote for r in rates} == {"USD", "JPY", "GBP"}

    def test_the_ecb_csv_skips_not_available_cells(self):
        rates = parse_rates_file(ECB_CSV)
        assert {r.quote for r in rates} == {"USD", "JPY", "BGN", "GBP"}
        assert all(r.as_of == DAY for r in rates)

    def test_a_plain_csv_of_pairs(self):
        rates = parse_rates_file(b"date,base,quote,rate\n2025-04-30,USD,KES,129.25\n")
        assert rates == [Rate("USD", "KES", D("129.25"), DAY, "CSV")]

    @pytest.mark.parametrize(
        "content",
        [
            b"",
            b"hello,world\n1,2\n",
            b"<not xml",
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>',
            b"date,base,quote,rate\n2025-04-30,USD,KES,-1\n",
            b"date,base,quote,rate\n2025-04-30,USD,KES,abc\n",
        ],
    )
    def test_bad_files_are_refused_naming_the_file(self, content):
        with pytest.raises(Rejected) as error:
            parse_rates_file(content)
        assert error.value.field == "file"


RATES = [
    Rate("EUR", "USD", D("1.1373"), DAY, "ECB"),
    Rate("EUR", "JPY", D("162.88"), DAY - timedelta(days=1), "ECB"),
    Rate("USD", "KES", D("129.25"), DAY, "manual:Ann"),
]


class TestConversion:
    def test_direct_inverse_and_cross_rates(self):
        assert find_rate(RATES, "EUR", "USD", on=DAY) == (D("1.1373"), "ECB", DAY)
        rate, source, _ = find_rate(RATES, "USD", "EUR", on=DAY)
        assert (rate, source) == (D("0.8792754770"), "inverse of ECB")
        rate, source, as_of = find_rate(RATES, "USD", "JPY", on=DAY)
        assert rate == D("143.2163896949")
        assert source.startswith("cross via EUR")
        assert as_of == DAY - timedelta(days=1)

    def test_a_missing_or_stale_rate_is_refused_naming_the_pair(self):
        with pytest.raises(Rejected) as error:
            convert(D("10"), "USD", "CHF", RATES, on=DAY, max_age=WEEK)
        assert error.value.code == "missing_rate"
        assert "USD->CHF" in error.value.detail
        with pytest.raises(Rejected):
            convert(D("10"), "EUR", "USD", RATES, on=DAY + timedelta(days=30), max_age=WEEK)
        with pytest.raises(Rejected):  # a rate dated after the conversion day is never used
            convert(D("10"), "EUR", "USD", RATES, on=DAY - timedelta(days=1), max_age=WEEK)

    def test_a_rate_entered_by_a_person_wins_over_the_file_on_the_same_day(self):
        rates = [*RATES, Rate("EUR", "USD", D("1.2000"), DAY, "manual:Ann")]
        assert find_rate(rates, "EUR", "USD", on=DAY)[0] == D("1.2000")

    def test_a_conversion_keeps_rate_source_date_and_rounding(self):
        result = convert(D("100.00"), "EUR", "JPY", RATES, on=DAY, max_age=WEEK)
        assert result.converted == D("16288")
        assert (result.rate, result.source, result.as_of) == (D("162.88"), "ECB", DAY - timedelta(days=1))
        assert "ROUND_HALF_EVEN" in result.rounding
        assert convert(D("5.00"), "USD", "USD", [], on=DAY, max_age=WEEK).rate == D(1)

    @given(st.decimals(min_value=D("-100000"), max_value=D("100000"), places=2))
    def test_conversion_is_rounded_to_the_minor_unit_and_keeps_the_sign(self, amount):
        result = convert(amount, "USD", "EUR", RATES, on=DAY, max_age=WEEK)
        assert result.converted == result.converted.quantize(D("0.01"))
        assert (result.converted > 0) == (amount > 0) or abs(result.converted) <= D("0.01")
        assert abs(result.converted - amount * result.rate) <= D("0.005")
        assert convert(-amount, "USD", "EUR", RATES, on=DAY, max_age=WEEK).converted == -result.converted
