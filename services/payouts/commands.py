"""Payouts' state changes outside runs: payees, commission rules, exchange rates, manual and imported earnings,
invoices, and approving manual lines. Each runs in the caller's transaction with its events and audit entry."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.payouts import domain, imports
from services.payouts.conversion import Rate, parse_rates_file
from services.payouts.domain import LineKind, LineStatus
from services.payouts.storage import (
    approvals,
    audit_log,
    idempotency_keys,
    invoices,
    lines,
    payees,
    rates,
    rules,
)
from shared import approvals as maker_checker
from shared import audit, idempotency
from shared.contracts import Envelope, Topic, new_envelope
from shared.contracts.events import EarningLine, Money
from shared.errors import Conflict, NotFound, Rejected
from shared.outbox import stage

SOURCE = "payouts"
EARNING_APPROVAL = "payout_earning"
RUN_APPROVAL = "payout_run"


# --- events of lines ---


async def stage_line_event(session: AsyncSession, row: dict[str, Any]) -> None:
    """`earning.accrued` (or `earning.reversed` for a reversal) for a line that now counts."""
    await stage(session, Topic.PAYOUTS_EVENTS, line_event(row))


def line_event(row: dict[str, Any]) -> Envelope:
    """The event that announces a line that now counts."""
    event_type = "earning.reversed" if row["kind"] == LineKind.REVERSAL else "earning.accrued"
    data = EarningLine(
        line_id=row["line_id"],
        payee_id=row["payee_id"],
        kind=row["kind"],
        amount=Money(amount=row["amount"], currency=row["currency"]),
        earned_on=row["earned_on"],
        source_ref=row.get("source_ref"),
        reverses_line_id=row.get("reverses_line_id"),
        reason=row.get("reason"),
        created_by=row["created_by"],
        created_at=row["created_at"],
    )
    return new_envelope(event_type, source=SOURCE, subject=row["payee_id"], data=data)


async def add_line(session: AsyncSession, row: dict[str, Any]) -> bool:
    """Insert a line once (by line id) and announce it if it counts; False if the id was already there."""
    inserted = (
        await session.execute(pg_insert(lines).values(**row).on_conflict_do_nothing().returning(lines.c.line_id))
    ).first()
    if inserted is None:
        return False
    if row["status"] == LineStatus.OPEN:
        await stage_line_event(session, row)
    return True


# --- commission rules ---


async def add_rule(session: AsyncSession, rule: domain.CommissionRule, *, actor: str) -> str:
    """A new version of a payee's (or group's) rule from its date; the version before it ends there.

    History is never rewritten: a version may only start after every line already accrued under the scope.
    """
    domain.validate_rule(rule)
    scope = rules.c.payee_id == rule.payee_id if rule.payee_id else rules.c.payee_group == rule.payee_group
    lock_key = f"payouts.rules:{rule.payee_id or rule.payee_group}"
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(lock_key))))
    if (
        rule.payee_id
        and (await session.execute(select(payees.c.payee_id).where(payees.c.payee_id == rule.payee_id))).first() is None
    ):
        raise NotFound("payee_not_found", f"no payee {rule.payee_id}", field="payee_id")
    if rule.payee_id:
        last_accrued = (
            await session.execute(
                select(func.max(lines.c.earned_on)).where(
                    lines.c.payee_id == rule.payee_id, lines.c.kind == LineKind.COMMISSION
                )
            )
        ).scalar_one_or_none()
        if last_accrued is not None and rule.effective_from <= last_accrued:
            raise Rejected(
                "rule_rewrites_history",
                f"commissions were accrued up to {last_accrued}; a new rule starts after that",
                field="effective_from",
            )
    await session.execute(
        update(rules)
        .where(scope, rules.c.effective_from < rule.effective_from)
        .where((rules.c.effective_to.is_(None)) | (rules.c.effective_to > rule.effective_from))
        .values(effective_to=rule.effective_from)
    )
    clash = (
        await session.execute(select(rules.c.rule_id).where(scope, rules.c.effective_from >= rule.effective_from))
    ).first()
    if clash is not None:
        raise Conflict(
            "rule_overlaps", f"rule {clash.rule_id} already starts on or after that date", field="effective_from"
        )
    rule_id = f"RULE-{uuid.uuid4().hex[:10].upper()}"
    row = {
        "rule_id": rule_id,
        "payee_id": rule.payee_id,
        "payee_group": rule.payee_group,
        "kind": rule.kind.value,
        "currency": rule.currency,
        "percent": rule.percent,
        "fixed": rule.fixed,
        "tiers": [{"from_volume": str(t.from_volume), "percent": str(t.percent)} for t in rule.tiers],
        "minimum_per_payment": rule.minimum_per_payment,
        "cap_per_payment": rule.cap_per_payment,
        "cap_per_month": rule.cap_per_month,
        "effective_from": rule.effective_from,
        "effective_to": rule.effective_to,
        "created_by": actor,
        "created_at": datetime.now(UTC),
    }
    await session.execute(rules.insert().values(**row))
    await audit.record(session, audit_log, actor=actor, action="rule.added", subject=rule_id, after=row)
    return rule_id


# --- exchange rates ---


async def store_rates(session: AsyncSession, found: list[Rate], *, actor: str) -> int:
    """Keep rates (idempotent per pair, day and source); returns how many were new."""
    for rate in found:
        domain.currency_code(rate.base, field="base")
        domain.currency_code(rate.quote, field="quote")
    if not found:
        return 0
    statement = (
        pg_insert(rates)
        .values(
            [
                {
                    "base": r.base,
                    "quote": r.quote,
                    "rate": r.rate,
                    "as_of": r.as_of,
                    "source": r.source,
                    "entered_by": actor,
                }
                for r in found
            ]
        )
        .on_conflict_do_nothing()
        .returning(rates.c.id)
    )
    added = len((await session.execute(statement)).all())
    await audit.record(
        session,
        audit_log,
        actor=actor,
        action="rates.imported",
        subject="rates",
        after={"rates": len(found), "new": added},
    )
    return added


async def import_rates(session: AsyncSession, data: bytes, *, actor: str) -> tuple[int, int]:
    found = parse_rates_file(data)
    return len(found), await store_rates(session, found, actor=actor)


async def enter_rate(session: AsyncSession, base: str, quote: str, rate: Decimal, as_of: date, *, actor: str) -> None:
    """A rate typed by a billing manager; its source names them."""
    if rate <= 0:
        raise Rejected("invalid_rate", "a rate is positive", field="rate")
    chosen = Rate(
        domain.currency_code(base, field="base"),
        domain.currency_code(quote, field="quote"),
        rate,
        as_of,
        f"manual:{actor}",
    )
    await store_rates(session, [chosen], actor=actor)


# --- manual earnings and adjustments ---


@dataclass(frozen=True)
class ManualEarning:
    payee_id: str
    kind: str
    amount: Decimal
    currency: str
    earned_on: date
    reason: str
    description: str | None = None


async def add_manual_line(
    session: AsyncSession, command: ManualEarning, *, actor: str, limit: Decimal, idempotency_key: str
) -> str:
    """A manual earning or adjustment with a reason; above `limit` it waits for another person's approval."""
    try:
        kind = LineKind(command.kind)
    except ValueError:
        raise Rejected("unknown_kind", "kind is manual or adjustment", field="kind") from None
    if kind not in domain.MANUAL_KINDS:
        raise Rejected("unknown_kind", "kind is manual or adjustment", field="kind")
    currency = domain.currency_code(command.currency)
    amount = domain.manual_amount(kind, command.amount, currency)
    if not command.reason.strip():
        raise Rejected("required", "a manual line needs a reason", field="reason")

    async def run() -> str:
        if (
            await session.execute(select(payees.c.payee_id).where(payees.c.payee_id == command.payee_id))
        ).first() is None:
            raise NotFound("payee_not_found", f"no payee {command.payee_id}", field="payee_id")
        line_id = f"MAN-{uuid.uuid4().hex[:12].upper()}"
        pending = maker_checker.needs_approval(abs(amount), limit)
        row = {
            "line_id": line_id,
            "payee_id": command.payee_id,
            "kind": kind.value,
            "amount": amount,
            "currency": currency,
            "earned_on": command.earned_on,
            "description": command.description,
            "reason": command.reason.strip(),
            "status": (LineStatus.PENDING_APPROVAL if pending else LineStatus.OPEN).value,
            "created_by": actor,
            "created_at": datetime.now(UTC),
        }
        if pending:
            approval = await maker_checker.request_approval(
                session,
                approvals,
                topic=Topic.PAYOUTS_EVENTS,
                source=SOURCE,
                kind=EARNING_APPROVAL,
                subject=line_id,
                payload={"line_id": line_id},
                requested_by=actor,
                reason=command.reason.strip(),
                amount=abs(amount),
                currency=currency,
            )
            row["approval_id"] = approval.approval_id
        await add_line(session, row)
        await audit.record(
            session,
            audit_log,
            actor=actor,
            action=f"line.{kind.value}",
            subject=line_id,
            after=row,
            reason=command.reason.strip(),
        )
        return line_id

    return await idempotency.once(
        session, idempotency_keys, operation="manual_line", key=idempotency_key, request=command, run=run
    )


async def decide_line(
    session: AsyncSession, approval_id: str, *, approver: str, approve: bool, reason: str | None
) -> maker_checker.Approval:
    """Decide a manual line above the limit (never by its requester): approved it counts (Open); rejected, never."""
    decision = await maker_checker.decide(
        session,
        approvals,
        approval_id,
        topic=Topic.PAYOUTS_EVENTS,
        source=SOURCE,
        approver=approver,
        approve=approve,
        reason=reason,
    )
    line_id = decision.payload["line_id"]
    status = LineStatus.OPEN if approve else LineStatus.REJECTED
    row = (
        await session.execute(
            update(lines).where(lines.c.line_id == line_id).values(status=status.value).returning(lines)
        )
    ).one()
    if approve:
        await stage_line_event(session, dict(row._mapping))
    await audit.record(
        session, audit_log, actor=approver, action=f"line.{status.value.lower()}", subject=line_id, reason=reason
    )
    return decision


# --- imported lines ---


@dataclass(frozen=True)
class ImportedLine:
    line_id: str
    payee_id: str
    amount: Decimal
    currency: str
    earned_on: date
    description: str | None


def _line_from_row(row: dict[str, str]) -> ImportedLine:
    currency = domain.currency_code(imports.required(row, "currency"))
    amount = imports.decimal_cell(row, "amount")
    if amount == 0 or domain.to_minor(amount, currency) != amount:
        raise Rejected("invalid_amount", f"amount is non-zero in {currency}'s minor unit", field="amount")
    return ImportedLine(
        line_id=imports.required(row, "line_id"),
        payee_id=imports.required(row, "payee_id"),
        amount=amount,
        currency=currency,
        earned_on=imports.date_cell(row, "earned_on"),
        description=imports.optional(row, "description"),
    )


async def import_lines(
    session: AsyncSession, data: bytes, *, actor: str, max_bytes: int, dry_run: bool
) -> dict[str, Any]:
    """Earnings lines from CSV/XLSX, all or nothing, idempotent by line id (the same line again changes nothing;
    the same id with other content is an error)."""
    parsed, report = imports.validate_rows(imports.read_table(data, max_bytes=max_bytes), _line_from_row)
    ids = [line.line_id for _, line in parsed]
    known_payees = set(
        (
            await session.execute(
                select(payees.c.payee_id).where(payees.c.payee_id.in_({p.payee_id for _, p in parsed}))
            )
        ).scalars()
    )
    existing = {r.line_id: r for r in (await session.execute(select(lines).where(lines.c.line_id.in_(ids)))).all()}
    fresh: list[ImportedLine] = []
    seen: set[str] = set()
    for number, line in parsed:
        problem: tuple[str, str, str] | None = None
        if line.line_id in seen:
            problem = ("line_id", "duplicate", "line_id twice in the file")
        elif line.payee_id not in known_payees:
            problem = ("payee_id", "payee_not_found", f"no payee {line.payee_id}")
        elif line.line_id in existing:
            before = existing[line.line_id]
            same = (before.payee_id, before.amount, before.currency, before.earned_on) == (
                line.payee_id,
                line.amount,
                line.currency,
                line.earned_on,
            )
            if not same:
                problem = ("line_id", "line_id_reused", "this line id was imported before with other values")
        else:
            fresh.append(line)
        seen.add(line.line_id)
        if problem:
            report.errors.append(imports.RowError(number, *problem))
            report.valid -= 1
    if not report.errors and not dry_run:
        now = datetime.now(UTC)
        for line in fresh:
            await add_line(
                session,
                {
                    "line_id": line.line_id,
                    "payee_id": line.payee_id,
                    "kind": LineKind.IMPORT.value,
                    "amount": line.amount,
                    "currency": line.currency,
                    "earned_on": line.earned_on,
                    "description": line.description,
                    "source_ref": "import",
                    "status": LineStatus.OPEN.value,
                    "created_by": actor,
                    "created_at": now,
                },
            )
    imported = 0 if report.errors or dry_run else len(fresh)
    return report.as_json(
        imported=imported, unchanged=len(parsed) - len(fresh) if not report.errors else 0, dry_run=dry_run
    )


# --- invoices ---

INVOICE_TYPES = {b"%PDF-": "application/pdf", b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}


def invoice_type(content: bytes) -> str:
    """The invoice's real type from its first bytes (PDF, PNG or JPEG), whatever the upload claimed."""
    for magic, media_type in INVOICE_TYPES.items():
        if content.startswith(magic):
            return media_type
    raise Rejected("invoice_type", "an invoice is a PDF, PNG or JPEG file", field="file")


async def upload_invoice(
    session: AsyncSession,
    line_id: str,
    filename: str,
    content: bytes,
    *,
    actor: str,
    payee_scope: str | None,
    max_bytes: int,
) -> str:
    """Keep an invoice file for a line, in Postgres; a payee may only upload for its own lines."""
    if not content:
        raise Rejected("empty_file", "the invoice file is empty", field="file")
    if len(content) > max_bytes:
        raise Rejected("file_too_large", f"an invoice is at most {max_bytes} bytes", field="file")
    media_type = invoice_type(content)
    line = (await session.execute(select(lines.c.payee_id).where(lines.c.line_id == line_id))).first()
    if line is None or (payee_scope is not None and line.payee_id != payee_scope):
        raise NotFound("line_not_found", f"no line {line_id}", field="line_id")
    invoice_id = f"INVF-{uuid.uuid4().hex[:12].upper()}"
    digest = hashlib.sha256(content).hexdigest()
    await session.execute(
        invoices.insert().values(
            invoice_id=invoice_id,
            line_id=line_id,
            payee_id=line.payee_id,
            filename=(filename or "invoice")[:200],
            content_type=media_type,
            size=len(content),
            sha256=digest,
            content=content,
            uploaded_by=actor,
            uploaded_at=datetime.now(UTC),
        )
    )
    await audit.record(
        session,
        audit_log,
        actor=actor,
        action="invoice.uploaded",
        subject=line_id,
        after={"invoice_id": invoice_id, "sha256": digest, "size": len(content)},
    )
    return invoice_id
