"""Keyset paging: one opaque cursor format, the keyset condition, pages, and literal LIKE patterns."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Column, ColumnElement, Date, Integer, MetaData, String, Table
from sqlalchemy.dialects import postgresql

from shared.errors import Rejected
from shared.paging import KeyType, after_key, contains_pattern, decode_cursor, encode_cursor, escape_like, page

rows_table = Table("rows", MetaData(), Column("day", Date), Column("id", String), Column("seq", Integer))


def sql(clause: ColumnElement[bool]) -> str:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    return str(clause.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def refused(token: str, *, sort: str = "-date", types: tuple[KeyType, ...] = (date, str)) -> Rejected:
    with pytest.raises(Rejected) as caught:
        decode_cursor(token, sort=sort, types=types)
    return caught.value


class TestCursor:
    def test_reads_back_the_sort_key_it_was_made_from(self) -> None:
        token = encode_cursor("-date", [date(2025, 3, 1), "PAY-2025-004521"])
        assert decode_cursor(token, sort="-date", types=(date, str)) == (date(2025, 3, 1), "PAY-2025-004521")

    def test_decimals_and_aware_times_come_back_exact(self) -> None:
        moment = datetime(2025, 3, 1, 9, 30, 0, 123456, tzinfo=UTC)
        token = encode_cursor("amount", [Decimal("1234567890.10"), moment, 7])
        assert decode_cursor(token, sort="amount", types=(Decimal, datetime, int)) == (
            Decimal("1234567890.10"),
            moment,
            7,
        )

    @given(st.lists(st.text(), min_size=1, max_size=4), st.text(min_size=1))
    def test_any_text_key_round_trips(self, key: list[str], sort: str) -> None:
        assert decode_cursor(encode_cursor(sort, key), sort=sort, types=[str] * len(key)) == tuple(key)

    def test_is_url_safe_and_unpadded(self) -> None:
        token = encode_cursor("newest", ["a?/+=&" * 5, 123])
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

    def test_a_cursor_of_another_sort_is_refused_naming_the_cursor(self) -> None:
        error = refused(encode_cursor("date", [date(2025, 3, 1), "P-1"]), sort="-date")
        assert (error.code, error.field, error.status) == ("invalid_cursor", "cursor", 422)

    def test_a_key_of_the_wrong_length_is_refused(self) -> None:
        assert refused(encode_cursor("-date", ["2025-03-01"])).code == "invalid_cursor"

    def test_a_key_value_of_the_wrong_type_is_refused(self) -> None:
        assert refused(encode_cursor("-date", ["145.50", "P-1"])).code == "invalid_cursor"

    @pytest.mark.parametrize("text", ["NaN", "Infinity", "1e999999999999", "abc"])
    def test_a_decimal_that_is_no_amount_is_refused(self, text: str) -> None:
        assert refused(encode_cursor("amount", [text]), sort="amount", types=(Decimal,)).field == "cursor"

    @pytest.mark.parametrize("text", ["1.5", "", "٣", "--1"])
    def test_an_int_that_is_not_digits_is_refused(self, text: str) -> None:
        assert refused(encode_cursor("newest", [text]), sort="newest", types=(int,)).field == "cursor"

    def test_a_time_without_a_zone_is_refused(self) -> None:
        assert refused(encode_cursor("t", ["2025-03-01T10:00:00"]), sort="t", types=(datetime,)).field == "cursor"

    @pytest.mark.parametrize(
        "token",
        [
            "",
            "not base64!",
            "ééé",
            base64.urlsafe_b64encode(b"\xff\xfe").decode(),
            base64.urlsafe_b64encode(b"[1, 2]").decode(),
            base64.urlsafe_b64encode(json.dumps({"s": "-date", "k": [1, 2]}).encode()).decode(),
            base64.urlsafe_b64encode(json.dumps({"s": "-date", "k": "x", "extra": 1}).encode()).decode(),
            # The two formats the services used before: refused cleanly, never a 500.
            base64.urlsafe_b64encode(b"cn:new:42").decode(),
            base64.urlsafe_b64encode(b'["2025-03-01","PAY-1"]').decode(),
        ],
    )
    def test_anything_not_made_here_is_refused(self, token: str) -> None:
        assert refused(token).code == "invalid_cursor"


class TestAfterKey:
    def test_descending_pages_continue_below_the_last_row_as_a_row_value(self) -> None:
        clause = after_key([rows_table.c.day, rows_table.c.id], [date(2025, 3, 1), "P-9"], descending=True)
        assert sql(clause) == "(rows.day, rows.id) < ('2025-03-01', 'P-9')"

    def test_ascending_pages_continue_above_it(self) -> None:
        clause = after_key([rows_table.c.day, rows_table.c.id], [date(2025, 3, 1), "P-9"], descending=False)
        assert sql(clause) == "(rows.day, rows.id) > ('2025-03-01', 'P-9')"

    @pytest.mark.parametrize(("descending", "expected"), [(True, "rows.seq < 42"), (False, "rows.seq > 42")])
    def test_one_column_is_a_plain_comparison(self, descending: bool, expected: str) -> None:
        assert sql(after_key([rows_table.c.seq], [42], descending=descending)) == expected

    def test_needs_one_value_per_column(self) -> None:
        with pytest.raises(ValueError, match="one value per column"):
            after_key([rows_table.c.day, rows_table.c.id], [date(2025, 3, 1)], descending=True)


class TestPage:
    def test_a_full_page_with_more_behind_it_has_the_cursor_of_its_last_row(self) -> None:
        rows, cursor = page([1, 2, 3, 4], 3, sort="newest", key=lambda n: [n])
        assert rows == [1, 2, 3]
        assert cursor is not None
        assert decode_cursor(cursor, sort="newest", types=(int,)) == (3,)

    @pytest.mark.parametrize("fetched", [[], [1], [1, 2, 3]])
    def test_the_last_page_has_no_cursor(self, fetched: list[int]) -> None:
        assert page(fetched, 3, sort="newest", key=lambda n: [n]) == (fetched, None)


class TestLike:
    @pytest.mark.parametrize(
        ("text", "escaped"),
        [("50%", "50\\%"), ("a_b", "a\\_b"), ("C:\\dir", "C:\\\\dir"), ("\\%", "\\\\\\%"), ("plain", "plain")],
    )
    def test_wildcards_and_the_escape_character_are_taken_literally(self, text: str, escaped: str) -> None:
        assert escape_like(text) == escaped

    def test_contains_pattern_wraps_the_escaped_text_in_wildcards(self) -> None:
        assert contains_pattern("R-5_0%") == "%R-5\\_0\\%%"

    def test_case_and_spaces_are_left_to_the_caller(self) -> None:
        assert contains_pattern(" Doe ") == "% Doe %"
