"""Building what reconciliation consumes in tests: Stripe payouts as gateway_bridge should publish them, and
camt.053 statements of one day written from the ISO 20022 layout of the hand-written fixture."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from shared.contracts import Envelope, new_envelope
from shared.contracts.events import GatewayPayoutListed, Money, PayoutBalanceTransaction

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "reconciliation"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@dataclass(frozen=True)
class Charge:
    payment_intent_id: str
    account_number: str
    amount: Decimal
    fee: Decimal


def payout_listed(payout_id: str, arrival: date, charges: list[Charge]) -> Envelope:
    """`gateway.payout_listed` for a payout of `charges` (net of fees), as gateway_bridge would publish it."""
    transactions = [
        PayoutBalanceTransaction(
            balance_transaction_id=f"txn_{payout_id}_{n}",
            type="charge",
            amount=Money(amount=c.amount),
            fee=Money(amount=c.fee),
            net=Money(amount=c.amount - c.fee),
            payment_intent_id=c.payment_intent_id,
            source_id=f"ch_{payout_id}_{n}",
            account_number=c.account_number,
        )
        for n, c in enumerate(charges)
    ]
    data = GatewayPayoutListed(
        payout_id=payout_id,
        amount=Money(amount=sum((t.net.amount for t in transactions), Decimal(0))),
        arrival_date=arrival,
        status="paid",
        balance_transactions=transactions,
        listed_at=datetime.now(UTC),
    )
    return new_envelope("gateway.payout_listed", source="gateway_bridge", subject=payout_id, data=data)


@dataclass(frozen=True)
class Entry:
    amount: Decimal  # signed
    reference: str
    bank_reference: str
    text: str = ""
    code: tuple[str, str, str] = ("PMNT", "RCDT", "ESCT")


def camt053_day(statement_id: str, account: str, day: date, opening: Decimal, entries: list[Entry]) -> bytes:
    """One day's camt.053.001.08 statement; the closing balance is opening + entries."""
    closing = opening + sum((e.amount for e in entries), Decimal(0))
    ntry = "".join(
        f"""
      <Ntry>
        <Amt Ccy="USD">{abs(e.amount):.2f}</Amt>
        <CdtDbtInd>{"CRDT" if e.amount > 0 else "DBIT"}</CdtDbtInd>
        <Sts><Cd>BOOK</Cd></Sts>
        <BookgDt><Dt>{day.isoformat()}</Dt></BookgDt>
        <ValDt><Dt>{day.isoformat()}</Dt></ValDt>
        <AcctSvcrRef>{e.bank_reference}</AcctSvcrRef>
        <BkTxCd><Domn><Cd>{e.code[0]}</Cd><Fmly><Cd>{e.code[1]}</Cd><SubFmlyCd>{e.code[2]}</SubFmlyCd></Fmly></Domn></BkTxCd>
        <NtryDtls><TxDtls>
          <Refs><EndToEndId>{e.reference or "NOTPROVIDED"}</EndToEndId></Refs>
          <Amt Ccy="USD">{abs(e.amount):.2f}</Amt>
          <RmtInf><Ustrd>{e.reference} {e.text}</Ustrd></RmtInf>
        </TxDtls></NtryDtls>
        <AddtlNtryInf>{e.text}</AddtlNtryInf>
      </Ntry>"""
        for e in entries
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08">
  <BkToCstmrStmt>
    <GrpHdr><MsgId>MSG-{statement_id}</MsgId><CreDtTm>{day.isoformat()}T23:00:00Z</CreDtTm></GrpHdr>
    <Stmt>
      <Id>{statement_id}</Id>
      <FrToDt><FrDtTm>{day.isoformat()}T00:00:00Z</FrDtTm><ToDtTm>{day.isoformat()}T23:59:59Z</ToDtTm></FrToDt>
      <Acct><Id><IBAN>{account}</IBAN></Id><Ccy>USD</Ccy></Acct>
      <Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="USD">{opening:.2f}</Amt><CdtDbtInd>CRDT</CdtDbtInd>
        <Dt><Dt>{day.isoformat()}</Dt></Dt></Bal>
      <Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy="USD">{closing:.2f}</Amt><CdtDbtInd>CRDT</CdtDbtInd>
        <Dt><Dt>{day.isoformat()}</Dt></Dt></Bal>{ntry}
    </Stmt>
  </BkToCstmrStmt>
</Document>
""".encode()
