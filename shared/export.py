"""Streamed CSV and XLSX exports: constant memory at any size, ready for a FastAPI `StreamingResponse`.

Rows are sequences of cells. A `Decimal` is money: plain text in CSV, a number cell in XLSX so the sheet can
sum it. Dates are ISO 8601; `None` is an empty cell.
"""

from __future__ import annotations

import asyncio
import csv
import io
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import IO, Any, Literal

import xlsxwriter
from fastapi.responses import StreamingResponse

ExportFormat = Literal["csv", "xlsx"]
Cell = str | int | Decimal | date | datetime | None

MEDIA_TYPES: dict[ExportFormat, str] = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
# Excel's limit per sheet, the header row included; a longer export continues on a new sheet.
EXCEL_MAX_ROWS = 1_048_576
# Bytes per chunk sent, for both formats: large enough to keep the per-chunk overhead small, small enough to
# keep memory flat.
CHUNK_BYTES = 64 * 1024
_SHEET_NAME_MAX = 31  # Excel refuses longer sheet names


# For a route's `responses=`: its 200 is a file in either format, not JSON.
OPENAPI_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The file, CSV or XLSX as `format` asks.", "content": {t: {} for t in MEDIA_TYPES.values()}}
}


def media_type(export_format: ExportFormat) -> str:
    """The Content-Type of an export."""
    return MEDIA_TYPES[export_format]


def export_filename(stem: str, export_format: ExportFormat, now: datetime | None = None) -> str:
    """`<stem>-<UTC timestamp>.<format>`, e.g. `payments-20250301T093000Z.csv`."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{stem}-{moment:%Y%m%dT%H%M%SZ}.{export_format}"


def content_disposition(filename: str) -> str:
    """The header that makes a browser save the export under `filename`."""
    return f'attachment; filename="{filename}"'


def _text(cell: Cell) -> str:
    if cell is None:
        return ""
    if isinstance(cell, Decimal):
        return format(cell, "f")
    if isinstance(cell, date):  # datetime too
        return cell.isoformat()
    return str(cell)


async def csv_chunks(
    headers: Sequence[str], rows: AsyncIterable[Sequence[Cell]], *, chunk_bytes: int = CHUNK_BYTES
) -> AsyncIterator[bytes]:
    """The CSV, header first, in chunks of about `chunk_bytes`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(headers)
    async for row in rows:
        writer.writerow([_text(cell) for cell in row])
        if buffer.tell() >= chunk_bytes:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


class _Sheets:
    """Writes rows into as many sheets as the row limit needs, each starting with the header."""

    def __init__(self, workbook: Any, title: str, headers: Sequence[str], max_rows: int) -> None:
        self.workbook = workbook
        self.title = title[:_SHEET_NAME_MAX]
        self.headers = list(headers)
        self.max_rows = max_rows
        self.bold = workbook.add_format({"bold": True})
        self.money = workbook.add_format({"num_format": "#,##0.00"})
        self.sheet: Any = None
        self.line = 0

    def _next_sheet(self) -> None:
        number = len(self.workbook.worksheets()) + 1
        suffix = "" if number == 1 else f" {number}"
        self.sheet = self.workbook.add_worksheet(self.title[: _SHEET_NAME_MAX - len(suffix)] + suffix)
        self.sheet.write_row(0, 0, self.headers, self.bold)
        self.line = 1

    def write(self, row: Sequence[Cell]) -> None:
        if self.sheet is None or self.line >= self.max_rows:
            self._next_sheet()
        for column, cell in enumerate(row):
            if isinstance(cell, Decimal):
                # An xlsx number is a double by definition; amounts of 2 decimals below 10^13 round-trip exactly.
                self.sheet.write_number(self.line, column, float(cell), self.money)
            elif cell is not None:
                self.sheet.write_string(self.line, column, _text(cell))
        self.line += 1

    def finish(self) -> None:
        if self.sheet is None:
            self._next_sheet()  # an empty export is still a workbook with its header


async def write_xlsx(
    headers: Sequence[str],
    rows: AsyncIterable[Sequence[Cell]],
    *,
    sheet_title: str = "Export",
    max_rows: int = EXCEL_MAX_ROWS,
) -> IO[bytes]:
    """The finished workbook in an anonymous temporary file (gone once closed), positioned at its start.

    constant_memory mode flushes each row to disk, so memory stays flat; closing the workbook zips it all,
    which takes seconds for a large export, so it runs in a thread and never stalls the event loop.
    """
    if max_rows < 2:
        raise ValueError("a sheet needs room for the header and at least one row")
    # Anonymous, so nothing is left on disk however the request ends; the caller closes it (file_chunks does).
    target = tempfile.TemporaryFile(suffix=".xlsx")  # noqa: SIM115
    try:
        workbook = xlsxwriter.Workbook(target, {"constant_memory": True})
        try:
            sheets = _Sheets(workbook, sheet_title, headers, max_rows)
            async for row in rows:
                sheets.write(row)
            sheets.finish()
        finally:
            # Also on failure: xlsxwriter's own row files are removed only when the workbook closes.
            await asyncio.to_thread(workbook.close)
        target.seek(0)
    except BaseException:
        target.close()
        raise
    return target


async def file_chunks(handle: IO[bytes], *, chunk_bytes: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
    """Read a finished export in chunks, closing (and so deleting) it at the end or when the client leaves."""
    try:
        while chunk := await asyncio.to_thread(handle.read, chunk_bytes):
            yield chunk
    finally:
        handle.close()


async def export_response(
    stem: str,
    export_format: ExportFormat,
    headers: Sequence[str],
    rows: AsyncIterable[Sequence[Cell]],
    *,
    sheet_title: str | None = None,
    now: datetime | None = None,
) -> StreamingResponse:
    """The download a route returns: CSV streams as rows arrive; XLSX is written first, then streamed.

    An XLSX is only readable once complete, so it is built before the response starts: an error while reading
    the rows is then a proper error response, never a truncated file sent with 200.
    """
    disposition = {"Content-Disposition": content_disposition(export_filename(stem, export_format, now))}
    if export_format == "csv":
        body = csv_chunks(headers, rows)
    else:
        workbook = await write_xlsx(headers, rows, sheet_title=sheet_title or stem.replace("-", " ").capitalize())
        body = file_chunks(workbook)
    return StreamingResponse(body, media_type=media_type(export_format), headers=disposition)
