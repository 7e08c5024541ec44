"""Reconciliation's state changes: statement imports, lines a bank pushes, and the reconciliation run that matches
them, settles payments and raises exceptions. Each runs in the caller's transaction with its events staged there.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import any_, func, literal, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import Text

from services.reconciliation import domain, matching
from services.reconciliation.domain import ExceptionKind, ItemStatus, LineStatus
from services.reconciliation.parsing import ColumnMapping, SheetMeta, parse_file
from services.reconciliation.settings import ReconciliationSettings
from services.reconciliation.storage import (
    audit_log,
    bank_lines,
    exceptions,
    expected_items,
    imports,
    matches,
    payments,
    statements,
)
from shared import audit
from shared.contracts import Envelope, Topic, new_envelope, parse_data
from shared.contracts.events import (
    BankLineMatched,
    BankStatementLineReceived,
    Money,
    PaymentSettlementReconciled,
    ReconciliationExceptionRaised,
    StatementImported,
)
from shared.errors import Conflict
from shared.outbox import stage, stage_many

SOURCE = "reconciliation"
SYSTEM = "System"
SETTLED = "Settled"
OPEN_LINE = (LineStatus.UNMATCHED, LineStatus.EXPECTED, LineStatus.EXCEPTED)
OPEN_ITEM = (ItemStatus.EXPECTED, ItemStatus.MISSING)


def _texts(values: list[str]) -> Any:
    """One array parameter (`= ANY($1)`) instead of one parameter per value: no limit at 100,000 ids."""
    return literal(values, type_=ARRAY(Text))


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def emit(session: AsyncSession, event_type: str, subject: str, data: Any, topic: str = "") -> None:
    await stage(
        session,
        topic or Topic.RECONCILIATION_EVENTS,
        new_envelope(event_type, source=SOURCE, subject=subject, data=data),
    )


# --- statement import ---


@dataclass(frozen=True)
class ImportResult:
    import_id: str
    statement_ids: list[str]
    replay: bool


async def import_statement_file(
    session: AsyncSession,
    content: bytes,
    filename: str,
    *,
    actor: str,
    today: date,
    mapping: ColumnMapping | None = None,
    meta: SheetMeta | None = None,
) -> ImportResult:
    """Parse, validate and store every statement of a file, all or nothing; the same file or statement twice
    changes nothing (the first import is returned)."""
    # One import at a time: two uploads of the same file never both pass the "seen before?" check.
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext("reconciliation.import"))))
    sha = hashlib.sha256(content).hexdigest()
    earlier = (await session.execute(select(imports).where(imports.c.file_sha256 == sha))).first()
    if earlier is not None:
        return ImportResult(earlier.import_id, list(earlier.statement_ids), replay=True)
    kind, parsed = parse_file(content, filename, mapping=mapping, meta=meta)
    domain.validate_file(parsed, today=today)
    now = datetime.now(UTC)
    import_id = new_id("IMP")
    statement_ids: list[str] = []
    created = 0
    for statement in parsed:
        known = (
            await session.execute(select(statements).where(statements.c.statement_ref == statement.statement_ref))
        ).first()
        if known is not None:
            same = (known.line_count, known.opening_balance, known.closing_balance) == (
                len(statement.lines),
                statement.opening_balance,
                statement.closing_balance,
            )
            if not same:
                raise Conflict(
                    "statement_conflict",
                    f"statement {statement.statement_ref} was imported before with other content",
                    field="statement_id",
                )
            statement_ids.append(known.statement_id)
            continue
        statement_ids.append(await _store_statement(session, statement, kind.value, import_id, actor, now))
        created += 1
    await session.execute(
        imports.insert().values(
            import_id=import_id,
            file_sha256=sha,
            filename=filename[:300],
            format=kind.value,
            imported_by=actor,
            imported_at=now,
            statement_ids=statement_ids,
        )
    )
    if not created:
        return ImportResult(import_id, statement_ids, replay=True)
    return ImportResult(import_id, statement_ids, replay=False)


async def _store_statement(
    session: AsyncSession, statement: domain.Statement, source: str, import_id: str, actor: str, now: datetime
) -> str:
    assert statement.currency and statement.opening_balance is not None and statement.closing_balance is not None
    statement_id = new_id("STM")
    row = {
        "statement_id": statement_id,
        "statement_ref": statement.statement_ref,
        "import_id": import_id,
        "account": statement.account,
        "currency": statement.currency,
        "opening_balance": statement.opening_balance,
        "closing_balance": statement.closing_balance,
        "from_date": statement.from_date,
        "to_date": statement.to_date,
        "line_count": len(statement.lines),
        "source": source,
        "imported_by": actor,
        "imported_at": now,
    }
    await session.execute(statements.insert().values(**row))
    if statement.lines:
        await session.execute(
            bank_lines.insert(),
            [
                {
                    "line_id": f"{statement_id}-{n:05d}",
                    "statement_id": statement_id,
                    "source_line": line.source_line,
                    "booking_date": line.booking_date,
                    "value_date": line.value_date,
                    "amount": line.amount,
                    "currency": statement.currency,
                    "reference": line.reference,
                    "bank_reference": line.bank_reference,
                    "text": line.text,
                    "type_code": line.type_code,
                    "counterparty": line.counterparty,
                    "status": LineStatus.UNMATCHED,
                }
                for n, line in enumerate(statement.lines, 1)
            ],
        )
    await audit.record(
        session, audit_log, actor=actor, action="statement.imported", subject=statement_id, after=row, at=now
    )
    imported = StatementImported(
        statement_id=statement_id,
        statement_ref=statement.statement_ref,
        account=statement.account,
        opening_balance=Money(amount=statement.opening_balance, currency=statement.currency),
        closing_balance=Money(amount=statement.closing_balance, currency=statement.currency),
        from_date=statement.from_date,
        to_date=statement.to_date,
        line_count=len(statement.lines),
        lines_total=Money(
            amount=sum((abs(line.amount or Decimal(0)) for line in statement.lines), Decimal(0)),
            currency=statement.currency,
        ),
        imported_by=actor,
        imported_at=now,
    )
    await emit(session, "statement.imported", statement.account, imported)
    return statement_id


# --- lines a bank pushes (reconciliation.commands.v1) ---


async def on_bank_statement_line_received(session: AsyncSession, envelope: Envelope) -> None:
    """A pushed line joins the account's running `push` statement; the same bank line twice is stored once."""
    pushed = parse_data(envelope, BankStatementLineReceived)
    statement_ref = f"push:{pushed.account}"
    now = datetime.now(UTC)
    statement_id = "PUSH-" + hashlib.sha256(statement_ref.encode()).hexdigest()[:12]
    await session.execute(
        pg_insert(statements)
        .values(
            statement_id=statement_id,
            statement_ref=statement_ref,
            account=pushed.account,
            currency=pushed.amount.currency,
            opening_balance=0,
            closing_balance=0,
            line_count=0,
            source="push",
            imported_by=envelope.source,
            imported_at=now,
        )
        .on_conflict_do_nothing(index_elements=["statement_id"])
    )
    line_id = "PL-" + hashlib.sha256(f"{pushed.account}/{pushed.bank_line_id}".encode()).hexdigest()[:16]
    stored = await session.execute(
        pg_insert(bank_lines)
        .values(
            line_id=line_id,
            statement_id=statement_id,
            source_line=0,
            booking_date=pushed.booking_date,
            value_date=pushed.value_date,
            amount=pushed.amount.amount,
            currency=pushed.amount.currency,
            reference=pushed.reference,
            bank_reference=pushed.bank_line_id,
            text=pushed.text,
            type_code=pushed.type_code,
            counterparty=pushed.counterparty,
            status=LineStatus.UNMATCHED,
        )
        .on_conflict_do_nothing(index_elements=["line_id"])
        .returning(bank_lines.c.line_id)
    )
    if stored.first() is not None:
        await session.execute(
            statements.update()
            .where(statements.c.statement_id == statement_id)
            .values(
                closing_balance=statements.c.closing_balance + pushed.amount.amount,
                line_count=statements.c.line_count + 1,
                to_date=func.greatest(statements.c.to_date, pushed.booking_date),
                from_date=func.least(statements.c.from_date, pushed.booking_date),
            )
        )


# --- the reconciliation run ---


def engine_rules(settings: ReconciliationSettings) -> list[matching.Rule]:
    return [
        matching.Rule(r.name, r.kind, r.amount_tolerance, r.date_tolerance_days, r.require_reference)  # type: ignore[arg-type]
        for r in settings.rules
    ]


def fee_policy(settings: ReconciliationSettings) -> matching.FeePolicy:
    return matching.FeePolicy(codes=frozenset(c.upper() for c in settings.fee_codes), keywords=settings.fee_keywords)


@dataclass(frozen=True)
class RunSummary:
    matched: int
    expected_lines: int
    excepted_lines: int
    missing_items: int

    def as_json(self) -> dict[str, int]:
        return {
            "matches": self.matched,
            "expected_lines": self.expected_lines,
            "excepted_lines": self.excepted_lines,
            "missing_items": self.missing_items,
        }


async def run_reconciliation(
    session: AsyncSession, settings: ReconciliationSettings, *, today: date, actor: str = SYSTEM
) -> RunSummary:
    """Match every open bank line against every open expected item, record matches, settle payments, and put
    what is left in the exception queue (or leave it Expected inside its window)."""
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext("reconciliation.run"))))
    line_rows = (await session.execute(select(bank_lines).where(bank_lines.c.status.in_(OPEN_LINE)))).all()
    item_rows = (await session.execute(select(expected_items).where(expected_items.c.status.in_(OPEN_ITEM)))).all()
    lines = [
        matching.BankLine(r.line_id, r.amount, r.currency, r.booking_date, r.reference, r.text, r.type_code)
        for r in line_rows
    ]
    items = [
        matching.ExpectedItem(
            r.item_id, r.amount, r.currency, r.origin_date, r.window_days, r.reference, r.group_key, r.gateway_fee
        )
        for r in item_rows
    ]
    result = matching.reconcile(
        lines,
        items,
        rules=engine_rules(settings),
        fees=fee_policy(settings),
        today=today,
        line_grace_days=settings.line_grace_days,
    )
    await record_matches(session, result.matches, actor=actor)
    lines_by_id = {r.line_id: r for r in line_rows}
    items_by_id = {r.item_id: r for r in item_rows}
    expected = [lid for lid, o in result.lines.items() if o is matching.LineOutcome.EXPECTED]
    excepted = [lid for lid, o in result.lines.items() if o is matching.LineOutcome.EXCEPTED]
    missing = [iid for iid, o in result.items.items() if o is matching.ItemOutcome.MISSING]
    await _set_status(session, "bank_lines", "line_id", expected, LineStatus.EXPECTED)
    await _set_status(session, "bank_lines", "line_id", excepted, LineStatus.EXCEPTED)
    await _set_status(session, "expected_items", "item_id", missing, ItemStatus.MISSING)
    now = datetime.now(UTC)
    await raise_exceptions(
        session,
        [
            NewException(
                ExceptionKind.UNMATCHED_BANK_LINE,
                f"line:{line.line_id}",
                line.amount,
                line.currency,
                f"bank line {line.bank_reference or line.line_id} of {line.booking_date} matches nothing expected",
            )
            for line in (lines_by_id[line_id] for line_id in excepted)
        ],
        now=now,
    )
    missing_groups = await raise_missing(session, [items_by_id[i] for i in missing], now=now)
    return RunSummary(len(result.matches), len(expected), len(excepted), missing_groups)


async def raise_missing(session: AsyncSession, rows: list[Any], *, now: datetime) -> int:
    """Exceptions for expected items past their window. A deposit or a payout is missing as a whole: one
    exception per group, not one per payment in it. Returns how many subjects that is (open ones included)."""
    missing_subjects: dict[str, list[Any]] = {}
    for row in rows:
        missing_subjects.setdefault(f"group:{row.group_key}" if row.group_key else f"item:{row.item_id}", []).append(
            row
        )
    found = []
    for subject, group in missing_subjects.items():
        total = sum((r.amount for r in group), Decimal(0))
        last = max(r.origin_date for r in group)
        detail = (
            f"{subject.split(':', 1)[1]} ({len(group)} item(s), {total}) has not reached the bank by {last} + "
            f"{group[0].window_days} day(s)"
        )
        found.append(NewException(ExceptionKind.MISSING_DEPOSIT, subject, total, group[0].currency, detail))
    await raise_exceptions(session, found, now=now)
    return len(missing_subjects)


async def _set_status(session: AsyncSession, table: str, key: str, ids: list[str], status: str) -> None:
    if ids:
        await session.execute(
            text(f"UPDATE reconciliation.{table} SET status = :status WHERE {key} = ANY(:ids)"),
            {"status": status, "ids": ids},
        )


async def record_matches(session: AsyncSession, found: list[matching.Match], *, actor: str) -> list[str]:
    """Store matches, mark their lines and items, close exceptions about them, settle the payments in them and
    stage `bank_line.matched` and one `payment.settlement_reconciled` per payment."""
    if not found:
        return []
    now = datetime.now(UTC)
    ids = [new_id("M") for _ in found]
    line_ids = [lid for m in found for lid in m.line_ids]
    currencies = dict(
        (
            await session.execute(
                select(bank_lines.c.line_id, bank_lines.c.currency).where(
                    bank_lines.c.line_id == any_(_texts(line_ids))
                )
            )
        ).all()
    )
    await session.execute(
        matches.insert(),
        [
            {
                "match_id": match_id,
                "rule": m.rule,
                "score": m.score,
                "line_ids": list(m.line_ids),
                "item_ids": list(m.item_ids),
                "line_total": m.line_total,
                "item_total": m.item_total,
                "differences": m.differences,
                "currency": currencies[m.line_ids[0]],
                "matched_by": actor,
                "matched_at": now,
            }
            for match_id, m in zip(ids, found, strict=True)
        ],
    )
    line_pairs = [(lid, match_id) for match_id, m in zip(ids, found, strict=True) for lid in m.line_ids]
    item_pairs = [(iid, match_id) for match_id, m in zip(ids, found, strict=True) for iid in m.item_ids]
    await session.execute(
        text(
            "UPDATE reconciliation.bank_lines b SET status = 'matched', match_id = u.m "
            "FROM unnest(CAST(:ids AS text[]), CAST(:ms AS text[])) AS u(id, m) WHERE b.line_id = u.id"
        ),
        {"ids": [p[0] for p in line_pairs], "ms": [p[1] for p in line_pairs]},
    )
    if item_pairs:
        await session.execute(
            text(
                "UPDATE reconciliation.expected_items e SET status = 'matched', match_id = u.m "
                "FROM unnest(CAST(:ids AS text[]), CAST(:ms AS text[])) AS u(id, m) WHERE e.item_id = u.id"
            ),
            {"ids": [p[0] for p in item_pairs], "ms": [p[1] for p in item_pairs]},
        )
    items = {
        r.item_id: r
        for r in await session.execute(
            select(expected_items).where(expected_items.c.item_id == any_(_texts([p[0] for p in item_pairs])))
        )
    }
    subjects = [f"line:{lid}" for lid in line_ids] + [f"item:{iid}" for iid, _ in item_pairs]
    subjects += list({f"group:{r.group_key}" for r in items.values() if r.group_key})
    await session.execute(
        exceptions.update()
        .where(exceptions.c.subject == any_(_texts(subjects)), exceptions.c.status == "open")
        .values(status="resolved", resolution="matched", resolved_by=actor, resolved_at=now)
    )
    await _announce(session, ids, found, items, currencies, actor=actor, now=now)
    return ids


async def _announce(
    session: AsyncSession,
    ids: list[str],
    found: list[matching.Match],
    items: dict[str, Any],
    currencies: dict[str, str],
    *,
    actor: str,
    now: datetime,
) -> None:
    """Settle the matched payments and stage the events, all in a few batched statements."""
    intents = [r.payment_intent_id for r in items.values() if r.payment_intent_id and not r.payment_id]
    payment_by_intent: dict[str, str] = {}
    if intents:
        # Online payments: reconciliation knows them by payment intent (linked from payments' events).
        linked = await session.execute(
            select(payments.c.payment_intent_id, payments.c.payment_id).where(
                payments.c.payment_intent_id == any_(_texts(intents))
            )
        )
        payment_by_intent = {k: v for k, v in linked.all() if v}
    matched_events, settled_events, settled_ids = [], [], []
    for match_id, m in zip(ids, found, strict=True):
        rows = [items[iid] for iid in m.item_ids]
        payout_id = next((r.group_key for r in rows if r.kind == "payout_txn"), None)
        payment_ids = [r.payment_id or payment_by_intent.get(r.payment_intent_id or "") for r in rows]
        matched = BankLineMatched(
            match_id=match_id,
            rule=m.rule,
            score=m.score,
            bank_line_ids=list(m.line_ids),
            item_ids=list(m.item_ids),
            amount=Money(amount=m.line_total, currency=currencies[m.line_ids[0]]),
            differences=m.differences,
            payment_ids=[p for p in payment_ids if p],
            payout_id=payout_id,
            matched_by=actor,
            matched_at=now,
        )
        matched_events.append(
            new_envelope("bank_line.matched", source=SOURCE, subject=payout_id or m.line_ids[0], data=matched)
        )
        for row, payment_id in zip(rows, payment_ids, strict=True):
            if not payment_id and not row.payment_intent_id:
                continue  # a fee or adjustment balance transaction: no payment to settle
            if payment_id:
                settled_ids.append(payment_id)
            settled = PaymentSettlementReconciled(
                payment_id=payment_id or "",
                payment_intent_id=row.payment_intent_id,
                account_number=row.account_number or "",
                match_id=match_id,
                bank_line_ids=list(m.line_ids),
                payout_id=payout_id,
                settled_at=now,
            )
            subject = row.account_number or payment_id or match_id
            settled_events.append(
                new_envelope("payment.settlement_reconciled", source=SOURCE, subject=subject, data=settled)
            )
    if settled_ids:
        await session.execute(
            payments.update()
            .where(payments.c.payment_id == any_(_texts(settled_ids)))
            .values(settlement_status=SETTLED, settled_at=now)
        )
    await stage_many(session, Topic.RECONCILIATION_EVENTS, matched_events + settled_events)


@dataclass(frozen=True)
class NewException:
    kind: ExceptionKind
    subject: str
    amount: Decimal
    currency: str
    detail: str


async def raise_exception(
    session: AsyncSession,
    kind: ExceptionKind,
    subject: str,
    amount: Decimal,
    currency: str,
    detail: str,
    *,
    now: datetime | None = None,
) -> str | None:
    """Put something in the queue, once per subject while open; returns the new exception's id (None if open)."""
    created = await raise_exceptions(session, [NewException(kind, subject, amount, currency, detail)], now=now)
    return created[0] if created else None


# Rows per INSERT: 8 parameters each, well under Postgres's 32,767 per statement.
EXCEPTION_BATCH = 2000


async def raise_exceptions(
    session: AsyncSession, found: list[NewException], *, now: datetime | None = None
) -> list[str]:
    """Many at once (a run's unmatched lines): multi-row inserts that skip subjects already open, and one batch
    of `reconciliation.exception_raised` for those created. Returns the new exceptions' ids."""
    now = now or datetime.now(UTC)
    created: list[str] = []
    envelopes = []
    for start in range(0, len(found), EXCEPTION_BATCH):
        chunk = {new_id("EXC"): e for e in found[start : start + EXCEPTION_BATCH]}
        inserted = await session.execute(
            pg_insert(exceptions)
            .values(
                [
                    {
                        "exception_id": exception_id,
                        "kind": e.kind,
                        "subject": e.subject,
                        "amount": e.amount,
                        "currency": e.currency,
                        "detail": e.detail,
                        "raised_at": now,
                        "status": "open",
                    }
                    for exception_id, e in chunk.items()
                ]
            )
            .on_conflict_do_nothing(index_elements=["subject"], index_where=text("status = 'open'"))
            .returning(exceptions.c.exception_id)
        )
        new = set(inserted.scalars())
        for exception_id, e in chunk.items():
            if exception_id not in new:
                continue
            created.append(exception_id)
            raised = ReconciliationExceptionRaised(
                exception_id=exception_id,
                kind=e.kind,
                subject=e.subject,
                amount=Money(amount=e.amount, currency=e.currency),
                detail=e.detail,
                raised_at=now,
            )
            envelopes.append(
                new_envelope("reconciliation.exception_raised", source=SOURCE, subject=e.subject, data=raised)
            )
    await stage_many(session, Topic.RECONCILIATION_EVENTS, envelopes)
    return created
