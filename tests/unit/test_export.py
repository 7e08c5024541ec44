"""Streamed CSV and XLSX exports: cells, chunks, sheets split at the row limit, the workbook closed off the loop."""

from __future__ import annotations

import csv
import html
import io
import re
import threading
import zipfile
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
import xlsxwriter

from shared.export import (
    Cell,
    content_disposition,
    csv_chunks,
    export_filename,
    export_response,
    file_chunks,
    media_type,
    write_xlsx,
)

HEADERS = ["Receipt #", "Amount", "Date", "Notes"]


async def rows_of(rows: Sequence[Sequence[Cell]]) -> AsyncIterator[Sequence[Cell]]:
    for row in rows:
        yield row


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


def sheets_of(data: bytes) -> dict[str, list[list[str]]]:
    """Sheet name -> rows of cell texts (numbers as written), read straight from the xlsx's XML."""
    book = zipfile.ZipFile(io.BytesIO(data))
    names = re.findall(r'<sheet name="([^"]+)"', book.read("xl/workbook.xml").decode())
    sheets = {}
    for index, name in enumerate(names, start=1):
        xml = book.read(f"xl/worksheets/sheet{index}.xml").decode()
        rows = []
        for row in re.findall(r"<row [^>]*>(.*?)</row>", xml):
            # constant_memory writes strings inline (<is><t>) and numbers as values (<v>).
            cells = re.findall(r"<c [^>]*>(?:<is><t[^>]*>([^<]*)</t></is>|<v>([^<]*)</v>)</c>", row)
            rows.append([html.unescape(text or number) for text, number in cells])
        sheets[name] = rows
    return sheets


async def xlsx(rows: Sequence[Sequence[Cell]], **options: Any) -> dict[str, list[list[str]]]:
    return sheets_of(await collect(file_chunks(await write_xlsx(HEADERS, rows_of(rows), **options))))


class TestCsv:
    async def test_starts_with_the_header_and_writes_each_cell_as_text(self) -> None:
        rows: list[list[Cell]] = [
            ["R-5001", Decimal("145.50"), date(2025, 3, 1), None],
            ["R-5002", Decimal("1E+1"), date(2025, 3, 2), 'a, "b"'],
        ]
        data = await collect(csv_chunks(HEADERS, rows_of(rows)))
        assert list(csv.reader(io.StringIO(data.decode()))) == [
            HEADERS,
            ["R-5001", "145.50", "2025-03-01", ""],
            ["R-5002", "10", "2025-03-02", 'a, "b"'],
        ]

    async def test_an_empty_export_is_the_header_alone(self) -> None:
        assert await collect(csv_chunks(HEADERS, rows_of([]))) == b"Receipt #,Amount,Date,Notes\r\n"

    async def test_comes_in_chunks_of_about_the_chunk_size_and_loses_nothing(self) -> None:
        rows: list[list[Cell]] = [[f"R-{n}", Decimal(n), date(2025, 1, 1), "x" * 50] for n in range(1000)]
        chunks = [c async for c in csv_chunks(HEADERS, rows_of(rows), chunk_bytes=4096)]
        assert len(chunks) > 10
        assert all(4096 <= len(c) < 4096 + 200 for c in chunks[:-1])
        assert len(list(csv.reader(io.StringIO(b"".join(chunks).decode())))) == 1001

    async def test_is_utf8(self) -> None:
        data = await collect(csv_chunks(["Name"], rows_of([["Zoë Ñúñez"]])))
        assert data.decode("utf-8").splitlines()[1] == "Zoë Ñúñez"


class TestXlsx:
    async def test_money_is_a_number_cell_and_other_cells_are_text(self) -> None:
        sheets = await xlsx([["R-5001", Decimal("145.50"), date(2025, 3, 1), None]], sheet_title="Payments")
        assert sheets == {"Payments": [HEADERS, ["R-5001", "145.5", "2025-03-01"]]}

    async def test_an_empty_export_is_one_sheet_with_its_header(self) -> None:
        assert await xlsx([], sheet_title="Payments") == {"Payments": [HEADERS]}

    async def test_a_sheet_holds_at_most_max_rows_including_its_header_then_a_new_one_starts(self) -> None:
        rows = [[f"R-{n}", Decimal(n), date(2025, 1, 1), None] for n in range(7)]
        sheets = await xlsx(rows, sheet_title="Payments", max_rows=3)
        assert list(sheets) == ["Payments", "Payments 2", "Payments 3", "Payments 4"]
        assert [len(rows) for rows in sheets.values()] == [3, 3, 3, 2]
        assert all(rows[0] == HEADERS for rows in sheets.values())
        assert [r[0] for rows in sheets.values() for r in rows[1:]] == [f"R-{n}" for n in range(7)]

    async def test_exactly_a_full_sheet_does_not_start_an_empty_one(self) -> None:
        rows = [[f"R-{n}", None, None, None] for n in range(4)]
        assert [len(r) for r in (await xlsx(rows, max_rows=5)).values()] == [5]

    async def test_a_limit_without_room_for_a_row_is_refused(self) -> None:
        with pytest.raises(ValueError, match="header"):
            await write_xlsx(HEADERS, rows_of([]), max_rows=1)

    async def test_a_long_title_is_cut_to_excels_31_characters_keeping_the_sheet_number(self) -> None:
        rows = [["a", None, None, None]] * 3
        sheets = await xlsx(rows, sheet_title="A very long title for a sheet, longer than Excel allows", max_rows=2)
        assert [len(name) for name in sheets] == [31, 31, 31]
        assert list(sheets)[2].endswith(" 3")

    async def test_is_written_in_constant_memory_mode_and_closed_off_the_event_loop(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        seen: dict[str, Any] = {}
        close = xlsxwriter.Workbook.close

        def spying_close(workbook: Any) -> None:
            seen["thread"], seen["constant_memory"] = threading.get_ident(), workbook.constant_memory
            close(workbook)

        monkeypatch.setattr(xlsxwriter.Workbook, "close", spying_close)
        handle = await write_xlsx(HEADERS, rows_of([["R-1", None, None, None]]))
        handle.close()
        assert seen["constant_memory"] is True
        assert seen["thread"] != threading.get_ident()

    async def test_a_failing_row_source_still_closes_the_workbook_and_raises(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        closed: list[bool] = []
        close = xlsxwriter.Workbook.close

        def counting_close(workbook: Any) -> None:
            closed.append(True)
            close(workbook)

        monkeypatch.setattr(xlsxwriter.Workbook, "close", counting_close)

        async def failing() -> AsyncIterator[Sequence[Cell]]:
            yield ["R-1", None, None, None]
            raise RuntimeError("database went away")

        with pytest.raises(RuntimeError, match="went away"):
            await write_xlsx(HEADERS, failing())
        assert closed == [True]

    async def test_the_file_is_closed_once_streamed(self) -> None:
        handle = await write_xlsx(HEADERS, rows_of([]))
        data = await collect(file_chunks(handle, chunk_bytes=100))
        assert data.startswith(b"PK")
        assert handle.closed


class TestResponse:
    NOW = datetime(2025, 3, 1, 9, 30, 5, tzinfo=UTC)

    def test_the_filename_carries_the_utc_time(self) -> None:
        assert export_filename("credit-notes", "xlsx", self.NOW) == "credit-notes-20250301T093005Z.xlsx"

    def test_the_content_type_of_each_format(self) -> None:
        assert media_type("csv") == "text/csv; charset=utf-8"
        assert media_type("xlsx") == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

    def test_the_disposition_is_an_attachment(self) -> None:
        assert content_disposition("p.csv") == 'attachment; filename="p.csv"'

    @pytest.mark.parametrize("export_format", ["csv", "xlsx"])
    async def test_a_route_returns_a_streaming_download(self, export_format: Any) -> None:
        response = await export_response(
            "payments", export_format, HEADERS, rows_of([["R-1", Decimal("1.00"), None, None]]), now=self.NOW
        )
        assert (
            response.headers["content-disposition"]
            == f'attachment; filename="payments-20250301T093005Z.{export_format}"'
        )
        assert response.media_type == media_type(export_format)
        body = b"".join([bytes(c) if not isinstance(c, str) else c.encode() async for c in response.body_iterator])
        assert ("R-1" in body.decode()) if export_format == "csv" else sheets_of(body)["Payments"][1][0] == "R-1"
