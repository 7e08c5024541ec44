"""The hand-written sample files of each format, read through the real libraries (pycamt, bai2, mt-940,
openpyxl), and the validation that refuses a file naming its line and field."""

from __future__ import annotations

import io
from datetime import date
from decimal import Decimal

import openpyxl
import pytest

from services.reconciliation.domain import StatementInvalid, validate_file
from services.reconciliation.parsing import ColumnMapping, FileFormat, SheetMeta, parse_file
from tests.support.reconciliation import fixture

D = Decimal
TODAY = date(2025, 5, 1)


def amounts(statement: object) -> list[str]:
    return [format(line.amount, "f") for line in statement.lines]  # type: ignore[attr-defined]


class TestCamt053:
    def test_a_multi_day_statement_is_one_statement_per_day_with_signed_lines_and_their_file_lines(self) -> None:
        kind, [first, second] = parse_file(fixture("camt053_two_days.xml"), "s.xml")
        assert kind is FileFormat.CAMT053
        assert (first.statement_ref, first.opening_balance, first.closing_balance) == (
            "camt:US64SVBKUS6S3300958879:STMT-2025-04-01",
            D("10000.00"),
            D("10425.50"),
        )
        # An entry with two transaction details is two lines (pycamt splits it); the debit is negative.
        assert amounts(first) == ["300.00", "100.00", "45.50", "-20.00"]
        assert [line.source_line for line in first.lines] == [25, 41, 41, 65]
        assert first.lines[3].type_code == "ACMT/MDOP/CHRG"
        assert "po_1PaydeskTest0001" in second.lines[0].reference
        validate_file([first, second], today=TODAY)

    def test_a_day_that_does_not_open_where_the_previous_closed_is_refused(self) -> None:
        content = fixture("camt053_two_days.xml").replace(
            b"10425.50</Amt><CdtDbtInd>CRDT</CdtDbtInd>\n        <Dt><Dt>2025-04-02",
            b"10425.60</Amt><CdtDbtInd>CRDT</CdtDbtInd>\n        <Dt><Dt>2025-04-02",
        )
        _, statements = parse_file(content, "s.xml")
        with pytest.raises(StatementInvalid) as refused:
            validate_file(statements, today=TODAY)
        fields = {(p.line, p.field) for p in refused.value.problems}
        assert (83, "opening_balance") in fields

    def test_camt052_is_refused_naming_what_to_send(self) -> None:
        with pytest.raises(StatementInvalid) as refused:
            parse_file(
                b'<?xml version="1.0"?><Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.052.001.08"/>', "n.xml"
            )
        assert refused.value.problems[0].field == "format" and "camt.054" in refused.value.problems[0].detail


class TestCamt054:
    def test_notifications_are_booked_lines_signed_with_their_details_and_file_lines(self) -> None:
        kind, [first, second] = parse_file(fixture("camt054_notifications.xml"), "n.xml")
        assert kind is FileFormat.CAMT054
        assert (first.statement_ref, first.opening_balance, first.closing_balance) == (
            "camt054:US64SVBKUS6S3300958879:NTF-2025-04-10-1",
            D("0"),
            D("162.10"),
        )
        # The batch booking is a line per detail; the reversed credit and the charge are debits; the pending
        # 999.00 is not on the account yet.
        assert amounts(first) == ["80.00", "50.00", "40.10", "-0.80", "-7.20"]
        assert [line.source_line for line in first.lines] == [32, 39, 58, 65, 85]
        assert [line.reference for line in first.lines[:3]] == [
            "INV-2025-005401",
            "E2E-5402 INV-2025-005402",
            "E2E-5403 INV-2025-005403",
        ]
        assert (first.lines[0].counterparty, first.lines[0].bank_reference) == ("Ann Able", "BK-N-0410-01-A")
        assert first.lines[4].type_code == "ACMT/MDOP/CHRG"
        # Without a transaction summary a notification closes at what its lines add up to; a DtTm is a date.
        assert (second.closing_balance, second.lines[0].booking_date) == (D("61.25"), date(2025, 4, 10))
        # Two notifications of one account are not a chain of statements: the second needs no opening of 162.10.
        validate_file([first, second], today=TODAY)

    def test_entries_that_do_not_add_up_to_the_summary_are_refused_naming_its_line(self) -> None:
        content = fixture("camt054_notifications.xml").replace(b"<Amt>162.10</Amt>", b"<Amt>162.01</Amt>")
        _, statements = parse_file(content, "n.xml")
        with pytest.raises(StatementInvalid) as refused:
            validate_file(statements, today=TODAY)
        [problem] = refused.value.problems
        assert (problem.line, problem.field) == (19, "closing_balance") and "difference -0.09" in problem.detail

    def test_a_line_without_an_amount_or_date_is_refused_naming_its_line(self) -> None:
        content = fixture("camt054_notifications.xml").replace(
            b'<Amt Ccy="USD">50.00</Amt>', b'<Amt Ccy="USD">fifty</Amt>'
        )
        _, statements = parse_file(content, "n.xml")
        with pytest.raises(StatementInvalid) as refused:
            validate_file(statements, today=TODAY)
        assert {(p.line, p.field) for p in refused.value.problems} == {(39, "amount")}

    def test_a_notification_file_that_is_not_xml_or_has_no_notification_is_refused(self) -> None:
        with pytest.raises(StatementInvalid) as broken:
            parse_file(b'<?xml version="1.0"?>\n<Document xmlns="urn:camt.054.001.08">\n<Bk>', "n.xml")
        assert broken.value.problems[0].field == "file" and broken.value.problems[0].line >= 2
        with pytest.raises(StatementInvalid) as empty:
            parse_file(b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.054.001.08"/>', "n.xml")
        assert "Ntfctn" in empty.value.problems[0].detail


class TestBai2:
    def test_several_accounts_become_one_statement_each_with_ledger_balances(self) -> None:
        kind, statements = parse_file(fixture("bai2_two_accounts.bai"), "f.bai")
        assert kind is FileFormat.BAI2
        assert [s.account for s in statements] == ["1000123456", "2000654321"]
        assert [(s.opening_balance, s.closing_balance) for s in statements] == [
            (D("5000.00"), D("5325.50")),
            (D("1000.00"), D("1282.23")),
        ]
        assert amounts(statements[0]) == ["300.00", "45.50", "-20.00"]
        assert [line.source_line for line in statements[0].lines] == [4, 5, 6]
        assert statements[1].lines[0].source_line == 9 and "TRANSFER po_1PaydeskTest0001" in statements[1].lines[0].text
        validate_file(statements, today=TODAY)

    def test_a_wrong_control_total_is_refused_by_the_library_naming_the_record(self) -> None:
        with pytest.raises(StatementInvalid) as refused:
            parse_file(fixture("bai2_two_accounts.bai").replace(b"49,1069100", b"49,1069101"), "f.bai")
        assert "control total" in refused.value.problems[0].detail
        assert refused.value.problems[0].line == 7


class TestMt940:
    def test_lines_carry_their_86_details_and_sign(self) -> None:
        kind, [statement] = parse_file(fixture("mt940_with_86.sta"), "f.sta")
        assert kind is FileFormat.MT940
        assert amounts(statement) == ["300.00", "145.50", "-20.00"]
        assert "/EREF/E2E-7781/REMI/INV-2025-001234" in statement.lines[1].reference
        assert statement.lines[2].type_code == "NCHG"
        assert [line.source_line for line in statement.lines] == [5, 7, 9]
        validate_file([statement], today=TODAY)

    def test_a_closing_balance_that_does_not_add_up_names_the_62F_line(self) -> None:
        _, statements = parse_file(
            fixture("mt940_with_86.sta").replace(b":62F:C250401USD10425,50", b":62F:C250401USD10425,00"), "f.sta"
        )
        with pytest.raises(StatementInvalid) as refused:
            validate_file(statements, today=TODAY)
        [problem] = refused.value.problems
        assert (problem.line, problem.field) == (11, "closing_balance")


MAPPING = ColumnMapping(
    date="Date", reference="Ref", amount="Amount", text="Details", date_format="%d.%m.%Y", decimal_comma=True
)
META = SheetMeta("ACCT-1", "EUR", D("100.00"), D("1334.56"), "2025-04")


class TestSpreadsheets:
    def test_a_csv_with_decimal_commas_and_day_first_dates(self) -> None:
        content = b"Date;Ref;Details;Amount\n01.04.2025;INV-1;x;1.234,56\n"
        mapping = ColumnMapping(**{**MAPPING.__dict__, "delimiter": ";"})
        _, [statement] = parse_file(content, "s.csv", mapping=mapping, meta=META)
        assert amounts(statement) == ["1234.56"] and statement.lines[0].booking_date == date(2025, 4, 1)
        validate_file([statement], today=TODAY)

    def test_an_xlsx_row_with_a_bad_date_is_named_by_its_row(self) -> None:
        book = openpyxl.Workbook()
        sheet = book.active
        sheet.append(["Date", "Ref", "Details", "Amount"])
        sheet.append(["01.04.2025", "INV-1", "x", 1234.56])
        sheet.append(["31.02.2025", "INV-2", "y", 0.0])
        buffer = io.BytesIO()
        book.save(buffer)
        _, statements = parse_file(buffer.getvalue(), "s.xlsx", mapping=MAPPING, meta=META)
        assert amounts(statements[0])[0] == "1234.56"
        with pytest.raises(StatementInvalid) as refused:
            validate_file(statements, today=TODAY)
        assert (refused.value.problems[0].line, refused.value.problems[0].field) == (3, "booking_date")

    def test_a_mapping_without_amount_columns_is_refused(self) -> None:
        with pytest.raises(ValueError, match="amount column"):
            ColumnMapping(date="Date", reference="Ref")
