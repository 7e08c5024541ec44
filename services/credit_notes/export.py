"""The credit-notes export: the filtered list streamed as CSV, or written to an XLSX file and then streamed."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import tempfile
from collections.abc import AsyncIterator
from typing import Any
from zoneinfo import ZoneInfo

import xlsxwriter

from services.credit_notes.views import EXPORT_COLUMNS, export_line


async def csv_chunks(rows: AsyncIterator[dict[str, Any]], zone: ZoneInfo) -> AsyncIterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    async for row in rows:
        writer.writerow(export_line(row, zone))
        count += 1
        if count % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


async def write_xlsx(rows: AsyncIterator[dict[str, Any]], zone: ZoneInfo) -> str:
    """Write the export to a temporary file; constant-memory mode keeps one row in memory at a time."""
    handle, path = tempfile.mkstemp(suffix=".xlsx", prefix="credit-notes-")
    os.close(handle)
    workbook = xlsxwriter.Workbook(path, {"constant_memory": True})
    written = False
    try:
        sheet = workbook.add_worksheet("Credit notes")
        bold = workbook.add_format({"bold": True})
        money = workbook.add_format({"num_format": "#,##0.00"})
        sheet.write_row(0, 0, EXPORT_COLUMNS, bold)
        line = 1
        async for row in rows:
            values = export_line(row, zone)
            sheet.write_row(line, 0, values[:3])
            # Numbers, so the spreadsheet can sum them. An xlsx number cell is a double by definition; amounts
            # with 2 decimals below 10^13 round-trip exactly through it.
            sheet.write_number(line, 3, float(row["amount"]), money)
            sheet.write_number(line, 4, float(row["remaining"]), money)
            sheet.write_row(line, 5, values[5:])
            line += 1
        written = True
    finally:
        await asyncio.to_thread(workbook.close)
        if not written:
            os.unlink(path)
    return path


async def file_chunks(path: str, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    try:
        with open(path, "rb") as handle:  # noqa: ASYNC230 - a local temporary file, read in small chunks
            while chunk := handle.read(size):
                yield chunk
    finally:
        os.unlink(path)
