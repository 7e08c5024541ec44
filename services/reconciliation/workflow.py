"""People's work: the exception queue's actions (match by hand, split, mark as fee, ignore with a reason, ask for
an adjustment through maker-checker), till closes, and deciding adjustments. Every action is audited."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.reconciliation import commands, domain, matching
from services.reconciliation.domain import ExceptionKind, ItemStatus, LineStatus, Resolution
from services.reconciliation.settings import ReconciliationSettings
from services.reconciliation.storage import (
    approvals,
    audit_log,
    bank_lines,
    exceptions,
    expected_items,
    payments,
    till_closes,
)
from shared import approvals as maker_checker
from shared import audit
from shared.contracts import Topic
from shared.contracts.events import Money, ReconciliationExceptionResolved, TillClosed
from shared.errors import Conflict, NotFound, Rejected

ADJUSTMENT = "reconciliation_adjustment"


async def _exception(session: AsyncSession, exception_id: str) -> Row[Any]:
    row = (
        await session.execute(select(exceptions).where(exceptions.c.exception_id == exception_id).with_for_update())
    ).first()
    if row is None:
        raise NotFound("unknown_exception", f"no exception {exception_id}", field="exception_id")
    if row.status != "open":
        raise Conflict("exception_closed", f"exception {exception_id} is already {row.status}")
    return row


async def _open_lines(session: AsyncSession, line_ids: list[str]) -> list[Row[Any]]:
    rows = (
        await session.execute(
            select(bank_lines)
            .where(bank_lines.c.line_id.in_(line_ids))
            .order_by(bank_lines.c.line_id)
            .with_for_update()
        )
    ).all()
    found = {r.line_id for r in rows}
    if missing := [lid for lid in line_ids if lid not in found]:
        raise NotFound("unknown_bank_line", f"no bank line {missing[0]}", field="line_ids")
    if closed := [r.line_id for r in rows if r.status not in commands.OPEN_LINE]:
        raise Conflict("bank_line_not_open", f"bank line {closed[0]} is already {rows[0].status}", field="line_ids")
    return list(rows)


async def _open_items(session: AsyncSession, item_ids: list[str]) -> list[Row[Any]]:
    rows = (
        await session.execute(
            select(expected_items)
            .where(expected_items.c.item_id.in_(item_ids))
            .order_by(expected_items.c.item_id)
            .with_for_update()
        )
    ).all()
    found = {r.item_id for r in rows}
    if missing := [iid for iid in item_ids if iid not in found]:
        raise NotFound("unknown_item", f"no expected item {missing[0]}", field="item_ids")
    if closed := [r.item_id for r in rows if r.status not in commands.OPEN_ITEM]:
        raise Conflict("item_not_open", f"expected item {closed[0]} is already matched or ignored", field="item_ids")
    return list(rows)


def _manual_match(lines: list[Row[Any]], items: list[Row[Any]], rule: str) -> matching.Match:
    line_total = sum((r.amount for r in lines), Decimal(0))
    item_total = sum((r.amount for r in items), Decimal(0))
    days = 0
    if items:
        first = min(i.origin_date for i in items)
        last = max(i.origin_date + timedelta(days=i.window_days) for i in items)
        days = max((matching.days_off(r.booking_date, first, last) for r in lines), default=0)
    differences = {"amount": format(line_total - item_total, "f"), "days": str(days)}
    fees = sum((i.gateway_fee for i in items), Decimal(0))
    if fees:
        differences["gateway_fees"] = format(fees, "f")
    return matching.Match(
        rule=rule,
        score=matching.score(line_total - item_total, item_total, days) if items else Decimal(100),
        line_ids=tuple(r.line_id for r in lines),
        item_ids=tuple(i.item_id for i in items),
        line_total=line_total,
        item_total=item_total,
        differences=differences,
    )


@dataclass(frozen=True)
class Resolve:
    """One action on an exception; which fields matter depends on `action`."""

    action: Resolution
    reason: str | None = None
    line_ids: tuple[str, ...] = ()
    item_ids: tuple[str, ...] = ()
    parts: tuple[domain.Split, ...] = ()
    amount: Decimal | None = None


def _subject_line(row: Row[Any]) -> str | None:
    return row.subject.split(":", 1)[1] if row.subject.startswith("line:") else None


async def resolve_exception(
    session: AsyncSession, exception_id: str, command: Resolve, *, actor: str, settings: ReconciliationSettings
) -> str:
    """Apply one action to an open exception and close it; returns the exception id."""
    row = await _exception(session, exception_id)
    now = datetime.now(UTC)
    after: dict[str, Any] = {"action": command.action.value}
    reason = (command.reason or "").strip() or None
    line_id = _subject_line(row)
    if command.action is Resolution.MANUAL_MATCH:
        line_ids = list(command.line_ids) or ([line_id] if line_id else [])
        if not line_ids or not command.item_ids:
            raise Rejected("candidates_required", "choose the bank lines and the expected items", field="item_ids")
        lines, items = await _open_lines(session, line_ids), await _open_items(session, list(command.item_ids))
        after["match_ids"] = await commands.record_matches(
            session, [_manual_match(lines, items, "manual")], actor=actor
        )
    elif command.action is Resolution.MARK_AS_FEE:
        if line_id is None:
            raise Rejected("not_a_bank_line", "only a bank line can be a fee", field="action")
        lines = await _open_lines(session, [line_id])
        after["match_ids"] = await commands.record_matches(
            session, [_manual_match(lines, [], "bank_fee_manual")], actor=actor
        )
    elif command.action is Resolution.SPLIT:
        if line_id is None:
            raise Rejected("not_a_bank_line", "only a bank line can be split", field="action")
        after |= await _split(session, line_id, list(command.parts), actor=actor)
    elif command.action is Resolution.IGNORE:
        if not reason:
            raise Rejected("reason_required", "ignoring an exception needs a reason", field="reason")
        await _ignore_subject(session, row.subject)
    elif command.action is Resolution.ADJUSTMENT_REQUESTED:
        if not reason:
            raise Rejected("reason_required", "an adjustment request needs a reason", field="reason")
        amount = command.amount if command.amount is not None else row.amount
        approval = await maker_checker.request_approval(
            session,
            approvals,
            topic=Topic.RECONCILIATION_EVENTS,
            source=commands.SOURCE,
            kind=ADJUSTMENT,
            subject=row.subject,
            payload={"exception_id": exception_id, "amount": format(amount, "f")},
            requested_by=actor,
            reason=reason,
            amount=amount,
            currency=row.currency,
            now=now,
        )
        after["approval_id"] = approval.approval_id
    await session.execute(
        update(exceptions)
        .where(exceptions.c.exception_id == exception_id)
        .values(status="resolved", resolution=command.action.value, resolved_by=actor, resolved_at=now, reason=reason)
    )
    await audit.record(
        session,
        audit_log,
        actor=actor,
        action=f"exception.{command.action.value}",
        subject=exception_id,
        before={"status": "open", "subject": row.subject, "amount": row.amount},
        after=after,
        reason=reason,
        at=now,
    )
    resolved = ReconciliationExceptionResolved(
        exception_id=exception_id,
        kind=row.kind,
        subject=row.subject,
        resolution=command.action.value,
        resolved_by=actor,
        reason=reason,
        resolved_at=now,
    )
    await commands.emit(session, "reconciliation.exception_resolved", row.subject, resolved)
    return exception_id


async def _ignore_subject(session: AsyncSession, subject: str) -> None:
    kind, _, key = subject.partition(":")
    if kind == "line":
        await session.execute(update(bank_lines).where(bank_lines.c.line_id == key).values(status=LineStatus.IGNORED))
    elif kind == "item":
        await session.execute(
            update(expected_items).where(expected_items.c.item_id == key).values(status=ItemStatus.IGNORED)
        )
    elif kind == "group":
        await session.execute(
            update(expected_items)
            .where(expected_items.c.group_key == key, expected_items.c.status.in_(commands.OPEN_ITEM))
            .values(status=ItemStatus.IGNORED)
        )


async def _split(session: AsyncSession, line_id: str, parts: list[domain.Split], *, actor: str) -> dict[str, Any]:
    [line] = await _open_lines(session, [line_id])
    domain.check_split(line.amount, parts)
    await session.execute(update(bank_lines).where(bank_lines.c.line_id == line_id).values(status="split"))
    child_ids = []
    found = []
    for n, part in enumerate(parts, 1):
        child_id = f"{line_id}/{n}"
        child_ids.append(child_id)
        values = {c.name: getattr(line, c.name) for c in bank_lines.columns}
        values |= {
            "line_id": child_id,
            "amount": part.amount,
            "status": LineStatus.UNMATCHED,
            "parent_line_id": line_id,
        }
        values["text"] = f"{line.text} [split {n}/{len(parts)}] {part.note}".strip()
        await session.execute(bank_lines.insert().values(**values))
        child = (await session.execute(select(bank_lines).where(bank_lines.c.line_id == child_id))).one()
        if part.fee:
            found.append(_manual_match([child], [], "bank_fee_manual"))
        elif part.item_ids:
            found.append(_manual_match([child], await _open_items(session, list(part.item_ids)), "manual_split"))
    match_ids = await commands.record_matches(session, found, actor=actor)
    return {"parts": child_ids, "match_ids": match_ids}


async def assign(session: AsyncSession, exception_id: str, owner: str, *, actor: str) -> None:
    row = await _exception(session, exception_id)
    await session.execute(update(exceptions).where(exceptions.c.exception_id == exception_id).values(owner=owner))
    await audit.record(
        session, audit_log, actor=actor, action="exception.assigned", subject=exception_id,
        before={"owner": row.owner}, after={"owner": owner},
    )  # fmt: skip


async def decide_adjustment(
    session: AsyncSession, approval_id: str, *, approve: bool, actor: str, reason: str | None
) -> maker_checker.Approval:
    """A second person approves or rejects an adjustment; approved, the exception's line is written off."""
    decided = await maker_checker.decide(
        session,
        approvals,
        approval_id,
        topic=Topic.RECONCILIATION_EVENTS,
        source=commands.SOURCE,
        approver=actor,
        approve=approve,
        reason=reason,
    )
    if approve and decided.subject.startswith("line:"):
        lines = await _open_lines(session, [decided.subject.split(":", 1)[1]])
        await commands.record_matches(session, [_manual_match(lines, [], "adjustment")], actor=actor)
    elif approve:
        await _ignore_subject(session, decided.subject)
    await audit.record(
        session, audit_log, actor=actor, action="adjustment.approved" if approve else "adjustment.rejected",
        subject=approval_id, after=decided.as_json(), reason=reason,
    )  # fmt: skip
    return decided


# --- till close ---


async def expected_till(session: AsyncSession, teller: str, business_date: date) -> tuple[Decimal, Decimal, int, str]:
    """Cash (received - change) and cheques a teller took on a day, from counter payments that still count."""
    rows = (
        await session.execute(
            select(payments).where(
                payments.c.received_by == teller,
                payments.c.payment_date == business_date,
                payments.c.channel != "Online",
                payments.c.status.in_(("Posted", "Disputed")),
            )
        )
    ).all()
    cash = sum(
        (domain.expected_cash_of(r.amount, r.cash_received, r.change_given) for r in rows if r.method == "Cash"),
        Decimal(0),
    )
    cheques = sum((r.amount for r in rows if r.method == "Cheque"), Decimal(0))
    currency = rows[0].currency if rows else "USD"
    return cash, cheques, len(rows), currency


async def close_till(
    session: AsyncSession,
    teller: str,
    business_date: date,
    *,
    counted_cash: Decimal,
    counted_cheques: Decimal,
    actor: str,
    settings: ReconciliationSettings,
) -> str:
    """Record the counted amounts and the variance; above the threshold the variance is an exception."""
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"till/{teller}/{business_date}"))))
    done = (
        await session.execute(
            select(till_closes).where(till_closes.c.teller == teller, till_closes.c.business_date == business_date)
        )
    ).first()
    if done is not None:
        raise Conflict("till_already_closed", f"the till of {teller} on {business_date} is already closed")
    cash, cheques, count, currency = await expected_till(session, teller, business_date)
    till = domain.TillCount(cash, cheques, counted_cash, counted_cheques)
    now = datetime.now(UTC)
    exception_id = None
    if till.needs_exception(settings.till_variance_threshold):
        exception_id = await commands.raise_exception(
            session,
            ExceptionKind.TILL_VARIANCE,
            f"till:{teller}/{business_date}",
            till.variance,
            currency,
            f"till of {teller} on {business_date}: counted {counted_cash + counted_cheques}, "
            f"expected {cash + cheques} (variance {till.variance})",
            now=now,
        )
    row = {
        "teller": teller,
        "business_date": business_date,
        "currency": currency,
        "expected_cash": cash,
        "expected_cheques": cheques,
        "counted_cash": counted_cash,
        "counted_cheques": counted_cheques,
        "variance": till.variance,
        "payments": count,
        "closed_by": actor,
        "closed_at": now,
        "exception_id": exception_id,
    }
    await session.execute(till_closes.insert().values(**row))
    await audit.record(
        session,
        audit_log,
        actor=actor,
        action="till.closed",
        subject=f"till:{teller}/{business_date}",
        after=row,
        at=now,
    )
    closed = TillClosed(
        teller=teller,
        business_date=business_date,
        expected_cash=Money(amount=cash, currency=currency),
        expected_cheques=Money(amount=cheques, currency=currency),
        counted_cash=Money(amount=counted_cash, currency=currency),
        counted_cheques=Money(amount=counted_cheques, currency=currency),
        variance=Money(amount=till.variance, currency=currency),
        closed_by=actor,
        closed_at=now,
        exception_id=exception_id,
    )
    await commands.emit(session, "till.closed", teller, closed)
    return f"{teller}/{business_date}"
