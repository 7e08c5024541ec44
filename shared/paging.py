"""Keyset paging with one opaque cursor format, and LIKE patterns that take the user's text literally.

A cursor is urlsafe base64 (unpadded) of `{"s": sort, "k": [key values]}`: the sort the page was made with and
the sort key of its last row. Clients pass it back unchanged; anything else is refused naming `cursor`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, literal, tuple_

from shared.errors import Rejected

# What a sort key may hold; each travels as a string, so a Decimal or a date comes back exact.
KeyValue = str | int | Decimal | date | datetime
KeyType = type[str] | type[int] | type[Decimal] | type[date] | type[datetime]
Row = TypeVar("Row")

# The escape character `escape_like` uses; PostgreSQL's default for LIKE and ILIKE, so no ESCAPE clause is needed.
LIKE_ESCAPE = "\\"
_PLAIN_DECIMAL = re.compile(r"-?[0-9]{1,40}(\.[0-9]{1,40})?")


def _as_text(value: KeyValue) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    return str(value)


def _from_text(text: str, kind: KeyType) -> KeyValue:
    if kind is str:
        return text
    if kind is int:
        if not text.lstrip("-").isdecimal() or not text.isascii():
            raise ValueError(text)
        return int(text)
    if kind is Decimal:
        # Only the plain notation encode_cursor writes: no NaN, no exponent that would overflow the column.
        if not _PLAIN_DECIMAL.fullmatch(text):
            raise ValueError(text)
        return Decimal(text)
    if kind is datetime:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            raise ValueError(text)
        return moment
    if kind is date:
        return date.fromisoformat(text)
    raise TypeError(f"a cursor cannot hold a {kind.__name__}")


def encode_cursor(sort: str, key: Sequence[KeyValue]) -> str:
    """The cursor of a page that ended on the row with sort key `key`, under sort order `sort`."""
    raw = json.dumps({"s": sort, "k": [_as_text(v) for v in key]}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, *, sort: str, types: Sequence[KeyType]) -> tuple[Any, ...]:
    """The sort key a cursor carries, typed as `types`; a cursor of another sort or shape is `Rejected`."""
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode("ascii") + b"=" * (-len(token) % 4)))
        if not isinstance(decoded, dict) or decoded.keys() != {"s", "k"}:
            raise ValueError("not a cursor")
        texts = decoded["k"]
        if decoded["s"] != sort or not isinstance(texts, list) or len(texts) != len(types):
            raise ValueError("a cursor of another list or sort")
        if not all(isinstance(t, str) for t in texts):
            raise ValueError("not a cursor")
        return tuple(_from_text(text, kind) for text, kind in zip(texts, types, strict=True))
    except (ValueError, UnicodeError, binascii.Error, InvalidOperation):
        # UnicodeError: non-ASCII text in the token; json and base64 raise ValueError subclasses for the rest.
        raise Rejected("invalid_cursor", "the cursor is not one this list gave out", field="cursor") from None


def after_key(columns: Sequence[ColumnElement[Any]], key: Sequence[Any], *, descending: bool) -> ColumnElement[bool]:
    """Rows strictly after `key` in the order of `columns` (all ascending or all descending).

    A row-value comparison, so a composite index on the same columns serves it as one range scan.
    """
    if len(columns) != len(key) or not columns:
        raise ValueError("a keyset needs one value per column")
    left: ColumnElement[Any] = columns[0] if len(columns) == 1 else tuple_(*columns)
    right: ColumnElement[Any] = literal(key[0]) if len(key) == 1 else tuple_(*(literal(v) for v in key))
    condition: ColumnElement[bool] = left < right if descending else left > right
    return condition


def page(
    rows: Sequence[Row], limit: int, *, sort: str, key: Callable[[Row], Sequence[KeyValue]]
) -> tuple[list[Row], str | None]:
    """Cut `limit + 1` fetched rows to one page, with the cursor of the next page (None on the last one)."""
    shown = list(rows[:limit])
    if len(rows) <= limit or not shown:
        return shown, None
    return shown, encode_cursor(sort, key(shown[-1]))


def escape_like(text: str) -> str:
    """`text` with LIKE's wildcards `%` and `_` (and the escape character itself) taken literally."""
    return text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", LIKE_ESCAPE + "%").replace("_", LIKE_ESCAPE + "_")


def contains_pattern(text: str) -> str:
    """A LIKE/ILIKE pattern matching any value that contains `text` as typed."""
    return f"%{escape_like(text)}%"
