"""Reading uploaded CSV and XLSX files into rows of text, and the row-by-row validation report. No database.

Every row is validated on its own; the report names the row (as a spreadsheet numbers it, header = 1), the
field and the problem. Nothing is written unless every row is valid, so an import is never half done.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from shared.errors import Rejected

T = TypeVar("T")
XLSX_MAGIC = b"PK\x03\x04"
MAX_ROWS = 10_000


@dataclass(frozen=True)
class RowError:
    row: int
    field: str | None
    code: str
    message: str

    def as_json(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "code": self.code, "message": self.message}


@dataclass
class Report:
    """What an import would do (or did): valid rows, and every error by row and field."""

    rows: int = 0
    valid: int = 0
    errors: list[RowError] = field(default_factory=list)

    def as_json(self, **extra: Any) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "valid": self.valid,
            "invalid": self.rows - self.valid,
            "errors": [e.as_json() for e in self.errors],
            **extra,
        }


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        # Spreadsheets store numbers as doubles; repr gives the shortest text that reads back the same.
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return str(value).strip()


def _xlsx_rows(data: bytes) -> Iterator[list[str]]:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise Rejected("invalid_file", f"not a readable XLSX workbook: {exc}", field="file") from None
    try:
        sheet = workbook.worksheets[0]
        for row in sheet.iter_rows(values_only=True):
            yield [_cell_text(v) for v in row]
    finally:
        workbook.close()


def read_table(data: bytes, *, max_bytes: int) -> list[dict[str, str]]:
    """A CSV (UTF-8) or the first sheet of an XLSX as dicts keyed by lower-cased header names."""
    if not data:
        raise Rejected("empty_file", "the file is empty", field="file")
    if len(data) > max_bytes:
        raise Rejected("file_too_large", f"imports are at most {max_bytes} bytes", field="file")
    if data.startswith(XLSX_MAGIC):
        rows = [r for r in _xlsx_rows(data) if any(r)]
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise Rejected("invalid_file", "a CSV must be UTF-8 text", field="file") from None
        rows = [[c.strip() for c in r] for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    if not rows:
        raise Rejected("empty_file", "the file has no header row", field="file")
    if len(rows) - 1 > MAX_ROWS:
        raise Rejected("too_many_rows", f"at most {MAX_ROWS} rows per import", field="file")
    header = [h.strip().lower().replace(" ", "_") for h in rows[0]]
    return [dict(zip(header, row + [""] * (len(header) - len(row)), strict=False)) for row in rows[1:]]


def validate_rows(
    rows: list[dict[str, str]], parse: Callable[[dict[str, str]], T]
) -> tuple[list[tuple[int, T]], Report]:
    """Parse every row; `Rejected` from `parse` becomes a report line for that row (header is row 1)."""
    report = Report(rows=len(rows))
    parsed: list[tuple[int, T]] = []
    for number, row in enumerate(rows, start=2):
        try:
            parsed.append((number, parse(row)))
        except Rejected as exc:
            report.errors.append(RowError(number, exc.field, exc.code, exc.detail))
    report.valid = len(parsed)
    return parsed, report


def required(row: dict[str, str], name: str) -> str:
    value = (row.get(name) or "").strip()
    if not value:
        raise Rejected("required", f"{name} is required", field=name)
    return value


def optional(row: dict[str, str], name: str) -> str | None:
    value = (row.get(name) or "").strip()
    return value or None


def decimal_cell(row: dict[str, str], name: str) -> Decimal:
    text = required(row, name)
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise Rejected("invalid_amount", f"{name} {text!r} is not a decimal number", field=name) from None
    if not value.is_finite():
        raise Rejected("invalid_amount", f"{name} must be a finite number", field=name)
    return value


def date_cell(row: dict[str, str], name: str) -> date:
    text = required(row, name)
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        raise Rejected("invalid_date", f"{name} {text!r} is not a date (YYYY-MM-DD)", field=name) from None
