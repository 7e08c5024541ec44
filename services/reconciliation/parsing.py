"""Bank files into `Statement`s, through well-kept parsers from PyPI: pycamt (camt.053), bai2 (BAI2), mt-940
(MT940); CSV (the standard library) and XLSX (openpyxl) through a saved column mapping; camt.054, which no
well-kept parser reads, through our small `camt054` module.

The libraries give fields; this module adds only what they do not: signs, exact decimals, and where in the file
each line is (lxml's source lines for camt, record positions for BAI2, `:61:` positions for MT940), so a
refused file's report names the line.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

import mt940
import openpyxl
from bai2.constants import TypeCodeTransaction
from bai2.exceptions import IntegrityException, NotSupportedYetException, ParsingException
from bai2.helpers import IteratorHelper
from bai2.parsers import Bai2FileParser
from lxml import etree
from pycamt.parser import Camt053ParseError, Camt053Parser

from services.reconciliation.camt054 import parse_camt054
from services.reconciliation.domain import Problem, Statement, StatementInvalid, StatementLine

CENT = Decimal("0.01")


class FileFormat(StrEnum):
    CAMT053 = "camt.053"
    CAMT054 = "camt.054"
    BAI2 = "bai2"
    MT940 = "mt940"
    CSV = "csv"
    XLSX = "xlsx"


def detect_format(content: bytes, filename: str) -> FileFormat:
    """By content first (banks name files oddly), by extension for spreadsheets."""
    head = content[:2048].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        if b"camt.054" in head:
            return FileFormat.CAMT054
        if b"camt.052" in head:
            raise StatementInvalid(
                [Problem(1, "format", "camt.052 intraday reports are not supported: send the camt.053 or camt.054")]
            )
        return FileFormat.CAMT053
    if head.startswith(b"01,"):
        return FileFormat.BAI2
    if re.search(rb"^:20:", head, re.MULTILINE):
        return FileFormat.MT940
    if content[:4] == b"PK\x03\x04" or filename.lower().endswith(".xlsx"):
        return FileFormat.XLSX
    if filename.lower().endswith((".csv", ".txt")):
        return FileFormat.CSV
    raise StatementInvalid([Problem(1, "format", "not a camt.053, camt.054, BAI2, MT940, CSV or XLSX file")])


def _decimal(text: Any) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _date(text: Any) -> date | None:
    if isinstance(text, datetime):
        return text.date()
    if isinstance(text, date):
        return date(text.year, text.month, text.day)
    if not text:
        return None
    try:
        return date.fromisoformat(str(text)[:10])
    except ValueError:
        return None


def _join(*parts: Any) -> str:
    return " ".join(str(p).strip() for p in parts if p and str(p).strip())


# --- camt.053 (pycamt) ---


@dataclass(frozen=True)
class _CamtLayout:
    """What pycamt does not return: each statement's id, period and where its balances and entries are."""

    statement_id: str
    from_date: date | None
    to_date: date | None
    opening_line: int
    closing_line: int
    entry_lines: list[int]  # one per transaction pycamt returns (an entry with n TxDtls counts n times)


def _camt_layout(content: bytes) -> list[_CamtLayout]:
    root = etree.fromstring(content, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    ns = {"c": root.nsmap[None]} if None in root.nsmap else {}
    p = "c:" if ns else ""
    layouts = []
    for stmt in root.iterfind(f".//{p}Stmt", ns):
        balances = {
            (b.findtext(f"{p}Tp/{p}CdOrPrtry/{p}Cd", namespaces=ns) or ""): b.sourceline
            for b in stmt.iterfind(f"{p}Bal", ns)
        }
        entries: list[int] = []
        for entry in stmt.iterfind(f".//{p}Ntry", ns):
            details = len(entry.findall(f".//{p}NtryDtls//{p}TxDtls", ns))
            entries.extend([entry.sourceline] * max(details, 1))
        layouts.append(
            _CamtLayout(
                statement_id=stmt.findtext(f"{p}Id", namespaces=ns) or "",
                from_date=_date(stmt.findtext(f"{p}FrToDt/{p}FrDtTm", namespaces=ns)),
                to_date=_date(stmt.findtext(f"{p}FrToDt/{p}ToDtTm", namespaces=ns)),
                opening_line=balances.get("OPBD") or stmt.sourceline,
                closing_line=balances.get("CLBD") or stmt.sourceline,
                entry_lines=entries,
            )
        )
    return layouts


_CAMT_CODES = ("BankTransactionCode", "TransactionFamilyCode", "TransactionSubFamilyCode")


def parse_camt053(content: bytes) -> list[Statement]:
    try:
        parser = Camt053Parser(content)
        infos = parser.get_statement_info()
        transactions = parser.get_transactions()
        header = parser.get_group_header()
        layouts = _camt_layout(content)
    except (Camt053ParseError, etree.XMLSyntaxError, AttributeError) as exc:
        line = getattr(exc, "lineno", 1) or 1
        raise StatementInvalid([Problem(line, "file", f"not a readable camt.053: {exc or 'no statement'}")]) from exc
    statements = []
    position = 0
    for index, (info, layout) in enumerate(zip(infos, layouts, strict=True)):
        lines = []
        for source_line in layout.entry_lines:
            t = transactions[position]
            position += 1
            amount = _decimal(t.get("Amount"))
            debit = t.get("CreditDebitIndicator") == "DBIT"
            if t.get("ReversalIndicator") == "true":
                debit = not debit
            lines.append(
                StatementLine(
                    source_line=source_line,
                    booking_date=_date(t.get("BookingDate")),
                    value_date=_date(t.get("ValueDate")),
                    amount=-amount if amount is not None and debit else amount,
                    currency=t.get("Currency"),
                    reference=_join(
                        t.get("EndToEndId"), t.get("RemittanceInformationFull") or t.get("RemittanceInformation")
                    ),
                    bank_reference=t.get("TransactionID") or "",
                    text=_join(t.get("AdditionalEntryInformation"), t.get("AdditionalRemittanceInformation")),
                    type_code="/".join(
                        c
                        for c in (
                            t.get("BankTransactionCode"),
                            t.get("TransactionFamilyCode"),
                            t.get("TransactionSubFamilyCode"),
                        )
                        if c
                    ),
                    counterparty=t.get("DebtorName") or t.get("CreditorName") or "",
                )
            )
        account = info.get("IBAN") or ""
        statement_id = layout.statement_id or f"{header.get('MessageID', '')}/{index + 1}"
        opening_date, closing_date = _date(info.get("OpeningBalanceDate")), _date(info.get("ClosingBalanceDate"))
        statements.append(
            Statement(
                statement_ref=f"camt:{account}:{statement_id}",
                account=account,
                currency=info.get("Currency") or (lines[0].currency if lines else None),
                # pycamt signs a debit balance through a float (str(-float)); a 2-decimal amount survives that.
                opening_balance=_decimal(info.get("OpeningBalance")),
                closing_balance=_decimal(info.get("ClosingBalance")),
                from_date=layout.from_date or opening_date,
                to_date=layout.to_date or closing_date,
                lines=tuple(lines),
                opening_source_line=layout.opening_line,
                closing_source_line=layout.closing_line,
            )
        )
    return statements


# --- BAI2 (bai2) ---


class _Counted:
    """The file's non-empty lines, counting how many the parser has read (to name a failing record's line)."""

    def __init__(self, lines: list[tuple[int, str]]) -> None:
        self.lines = lines
        self.read = 0

    def __iter__(self) -> Iterator[str]:
        for _, text in self.lines:
            self.read += 1
            yield text


def parse_bai2(content: bytes) -> list[Statement]:
    numbered = [
        (n, raw.strip()) for n, raw in enumerate(content.decode("utf-8", "replace").splitlines(), 1) if raw.strip()
    ]
    counted = _Counted(numbered)
    helper: IteratorHelper | None = None
    try:
        helper = IteratorHelper(iter(counted))
        parsed = Bai2FileParser(helper).parse()
    except (ParsingException, IntegrityException, NotSupportedYetException, ValueError, KeyError, StopIteration) as exc:
        # The parser reads one line ahead of the record it is on.
        rows = len(helper.current_record.rows) if helper and helper.current_record else 1
        index = max(counted.read - rows - 1, 0)
        line = numbered[min(index, len(numbered) - 1)][0] if numbered else 1
        if isinstance(exc, IntegrityException):
            # A section's totals are checked after its trailer, once the parser has moved past it.
            line = max((n for n, text in numbered if n < line and not text.startswith("88")), default=line)
        raise StatementInvalid([Problem(line, "record", f"BAI2: {exc}")]) from exc

    # Where each record starts, by record code, in file order (88 continues the record before it). The parsed
    # models cannot tell: the library's own integrity check concatenates section rows into the header's list.
    by_code: dict[str, list[int]] = {}
    for number, text in numbered:
        if not text.startswith("88"):
            by_code.setdefault(text[:2], []).append(number)
    starts = {code: iter(numbers) for code, numbers in by_code.items()}

    def take(code: str) -> int:
        return next(starts.get(code, iter(())), 0)

    statements = []
    for group in parsed.children:
        for account in group.children:
            header_line = take("03")
            summaries = {s.type_code.code: s.amount for s in account.header.summary_items}
            currency = account.header.currency or group.header.currency
            lines = []
            for detail in account.children:
                line = take("16")
                amount = Decimal(detail.amount).scaleb(-2) if detail.amount is not None else None
                if amount is not None and detail.type_code.transaction == TypeCodeTransaction.debit:
                    amount = -amount
                lines.append(
                    StatementLine(
                        source_line=line,
                        booking_date=group.header.as_of_date,
                        amount=amount,
                        currency=currency,
                        reference=detail.customer_reference or "",
                        bank_reference=detail.bank_reference or "",
                        text=detail.text or "",
                        type_code=detail.type_code.code,
                    )
                )
            opening, closing = summaries.get("010"), summaries.get("015")
            statements.append(
                Statement(
                    statement_ref=f"bai2:{account.header.customer_account_number}:{parsed.header.file_id}:{group.header.as_of_date}",
                    account=account.header.customer_account_number or "",
                    currency=currency,
                    opening_balance=Decimal(opening).scaleb(-2) if opening is not None else None,
                    closing_balance=Decimal(closing).scaleb(-2) if closing is not None else None,
                    from_date=group.header.as_of_date,
                    to_date=group.header.as_of_date,
                    lines=tuple(lines),
                    opening_source_line=header_line,
                    closing_source_line=header_line,
                )
            )
    return statements


# --- MT940 (mt-940) ---


def parse_mt940(content: bytes) -> list[Statement]:
    text = content.decode("utf-8", "replace")
    tag_lines: dict[str, list[int]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        match = re.match(r":(20|61|60[FM]|62[FM]):", raw.strip())
        if match:
            tag_lines.setdefault(match.group(1)[:2], []).append(number)
    try:
        blocks = mt940.parse_statements(text)
    except Exception as exc:  # the library raises plain RuntimeError/ValueError on a malformed tag
        raise StatementInvalid([Problem(1, "file", f"MT940: {exc}")]) from exc
    statements = []
    line_61 = iter(tag_lines.get("61", []))
    for index, block in enumerate(blocks):
        data = block.data
        opening = data.get("final_opening_balance") or data.get("intermediate_opening_balance")
        closing = data.get("final_closing_balance") or data.get("intermediate_closing_balance")
        lines = []
        for transaction in block:
            t = transaction.data
            amount = t.get("amount")
            lines.append(
                StatementLine(
                    source_line=next(line_61, 0),
                    booking_date=_date(t.get("entry_date") or t.get("date")),
                    value_date=_date(t.get("date")),
                    amount=amount.amount if amount is not None else None,
                    currency=t.get("currency"),
                    reference=_join(
                        t.get("customer_reference") if t.get("customer_reference") != "NONREF" else "",
                        t.get("end_to_end_reference"),
                        t.get("transaction_details") or t.get("purpose"),
                    ),
                    bank_reference=t.get("bank_reference") or "",
                    text=_join(t.get("extra_details"), t.get("applicant_name")),
                    type_code=t.get("id") or "",
                )
            )
        account = data.get("account_identification", "")
        statements.append(
            Statement(
                statement_ref=f"mt940:{account}:{data.get('transaction_reference', '')}:"
                f"{data.get('statement_number', '')}/{data.get('sequence_number', '')}",
                account=account,
                currency=opening.amount.currency if opening else None,
                opening_balance=opening.amount.amount if opening else None,
                closing_balance=closing.amount.amount if closing else None,
                from_date=_date(opening.date) if opening else None,
                to_date=_date(closing.date) if closing else None,
                lines=tuple(lines),
                opening_source_line=_nth(tag_lines.get("60", []), index),
                closing_source_line=_nth(tag_lines.get("62", []), index),
            )
        )
    return statements


def _nth(numbers: list[int], index: int) -> int:
    return numbers[index] if index < len(numbers) else 0


# --- CSV / XLSX with a saved column mapping ---


@dataclass(frozen=True)
class ColumnMapping:
    """Which columns of a spreadsheet export hold what; either `amount` (signed) or `credit` and `debit`."""

    date: str
    reference: str
    amount: str | None = None
    credit: str | None = None
    debit: str | None = None
    text: str | None = None
    bank_reference: str | None = None
    date_format: str = "%Y-%m-%d"
    decimal_comma: bool = False
    delimiter: str = ","

    def __post_init__(self) -> None:
        if self.amount is None and (self.credit is None or self.debit is None):
            raise ValueError("a mapping names an amount column, or both a credit and a debit column")


@dataclass(frozen=True)
class SheetMeta:
    """What a spreadsheet export does not carry and the upload form gives: account, currency, balances."""

    account: str
    currency: str
    opening_balance: Decimal
    closing_balance: Decimal
    statement_id: str


def _cell_amount(value: Any, mapping: ColumnMapping) -> Decimal | None:
    if value is None or value == "":
        return Decimal(0) if mapping.amount is None else None
    if isinstance(value, float):
        # An xlsx number is a double; a 2-decimal amount's shortest repr is exact.
        return _decimal(repr(value))
    text = str(value).strip().replace(" ", "")
    # With decimal commas, dots group thousands; otherwise commas do.
    text = text.replace(".", "").replace(",", ".") if mapping.decimal_comma else text.replace(",", "")
    return _decimal(text)


def _cell_date(value: Any, mapping: ColumnMapping) -> date | None:
    if isinstance(value, datetime | date):
        return _date(value)
    try:
        return datetime.strptime(str(value).strip(), mapping.date_format).date()
    except ValueError:
        return None


def _rows_to_statement(
    rows: Iterator[tuple[int, dict[str, Any]]], headers: list[str], mapping: ColumnMapping, meta: SheetMeta
) -> list[Statement]:
    needed = [c for c in (mapping.date, mapping.reference, mapping.amount, mapping.credit, mapping.debit) if c]
    missing = [c for c in needed if c not in headers]
    if missing:
        raise StatementInvalid([Problem(1, c, "column named by the mapping is not in the header row") for c in missing])
    lines = []
    for number, row in rows:
        if not any(v not in (None, "") for v in row.values()):
            continue
        if mapping.amount is not None:
            amount = _cell_amount(row.get(mapping.amount), mapping)
        else:
            credit = _cell_amount(row.get(mapping.credit or ""), mapping)
            debit = _cell_amount(row.get(mapping.debit or ""), mapping)
            amount = None if credit is None or debit is None else credit - abs(debit)
        lines.append(
            StatementLine(
                source_line=number,
                booking_date=_cell_date(row.get(mapping.date), mapping),
                amount=amount,
                currency=meta.currency,
                reference=str(row.get(mapping.reference) or ""),
                bank_reference=str(row.get(mapping.bank_reference) or "") if mapping.bank_reference else "",
                text=str(row.get(mapping.text) or "") if mapping.text else "",
            )
        )
    dates = [x.booking_date for x in lines if x.booking_date]
    return [
        Statement(
            statement_ref=f"sheet:{meta.account}:{meta.statement_id}",
            account=meta.account,
            currency=meta.currency,
            opening_balance=meta.opening_balance,
            closing_balance=meta.closing_balance,
            from_date=min(dates) if dates else None,
            to_date=max(dates) if dates else None,
            lines=tuple(lines),
            opening_source_line=1,
            closing_source_line=len(lines) + 1,
        )
    ]


def parse_csv(content: bytes, mapping: ColumnMapping, meta: SheetMeta) -> list[Statement]:
    reader = csv.DictReader(io.StringIO(content.decode("utf-8-sig")), delimiter=mapping.delimiter)
    headers = list(reader.fieldnames or [])
    return _rows_to_statement(((n, r) for n, r in enumerate(reader, 2)), headers, mapping, meta)


def parse_xlsx(content: bytes, mapping: ColumnMapping, meta: SheetMeta) -> list[Statement]:
    try:
        workbook = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises zipfile/KeyError/InvalidFileException on a broken file
        raise StatementInvalid([Problem(1, "file", f"not a readable xlsx: {exc}")]) from exc
    try:
        rows = workbook.worksheets[0].iter_rows(values_only=True)
        headers = [str(h) if h is not None else "" for h in next(rows, ())]
        return _rows_to_statement(
            ((n, dict(zip(headers, r, strict=False))) for n, r in enumerate(rows, 2)), headers, mapping, meta
        )
    finally:
        workbook.close()


def parse_file(
    content: bytes, filename: str, *, mapping: ColumnMapping | None = None, meta: SheetMeta | None = None
) -> tuple[FileFormat, list[Statement]]:
    """The file's format and statements; `StatementInvalid` (naming line and field) when unreadable."""
    kind = detect_format(content, filename)
    if kind is FileFormat.CAMT053:
        return kind, parse_camt053(content)
    if kind is FileFormat.CAMT054:
        return kind, parse_camt054(content)
    if kind is FileFormat.BAI2:
        return kind, parse_bai2(content)
    if kind is FileFormat.MT940:
        return kind, parse_mt940(content)
    if mapping is None or meta is None:
        raise StatementInvalid(
            [Problem(1, "mapping", "a CSV or XLSX statement needs a saved column mapping and the statement's balances")]
        )
    if kind is FileFormat.CSV:
        return kind, parse_csv(content, mapping, meta)
    return kind, parse_xlsx(content, mapping, meta)
