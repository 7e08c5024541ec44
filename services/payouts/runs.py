"""Payout runs: preview, create (lines locked into payouts), approve (maker-checker), and payout statuses from
the gateway or the bank. Executing an approved run is `execution.py`."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.payouts import disbursement, domain, planning
from services.payouts.commands import RUN_APPROVAL, SOURCE
from services.payouts.conversion import Rate
from services.payouts.domain import LineStatus, PayoutMethod, PayoutStatus, RunStatus
from services.payouts.settings import PayoutsSettings
from services.payouts.storage import (
    approvals,
    audit_log,
    idempotency_keys,
    lines,
    payees,
    payout_items,
    payout_number_seq,
    payouts,
    rates,
    run_number_seq,
    runs,
)
from shared import approvals as maker_checker
from shared import audit, idempotency
from shared.contracts import Topic, new_envelope
from shared.contracts.events import (
    GatewayPayoutStatusChanged,
    Money,
    PayoutRunApproved,
    PayoutStatusChanged,
)
from shared.errors import Conflict, NotFound, Rejected
from shared.outbox import stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunFilters:
    """Which payees and lines a run takes; every field optional."""

    as_of: date
    period_from: date | None = None
    period_to: date | None = None
    countries: tuple[str, ...] = ()
    currencies: tuple[str, ...] = ()
    payee_ids: tuple[str, ...] = ()
    payee_types: tuple[str, ...] = ()
    schedules: tuple[str, ...] = ()
    minimum_amount: Decimal | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            k: (v.isoformat() if isinstance(v, date) else str(v) if isinstance(v, Decimal) else v)
            for k, v in asdict(self).items()
        }


async def _open_lines(
    session: AsyncSession, filters: RunFilters, *, lock: bool
) -> tuple[list[planning.OpenLine], dict[str, planning.RunPayee]]:
    p, ln = payees.c, lines.c
    clauses = [ln.status == LineStatus.OPEN.value, ln.earned_on <= (filters.period_to or filters.as_of)]
    if filters.period_from:
        clauses.append(ln.earned_on >= filters.period_from)
    for column, values in (
        (p.country, filters.countries),
        (p.payout_currency, filters.currencies),
        (p.payee_id, filters.payee_ids),
        (p.payee_type, filters.payee_types),
        (p.schedule, filters.schedules),
    ):
        if values:
            clauses.append(column.in_(values))
    statement = (
        select(
            ln.line_id,
            ln.payee_id,
            ln.amount,
            ln.currency,
            ln.earned_on,
            ln.kind,
            p.name,
            p.payout_currency,
            p.method,
            p.status,
        )
        .select_from(lines.join(payees, p.payee_id == ln.payee_id))
        .where(*clauses)
        .order_by(ln.seq)
    )
    if lock:
        statement = statement.with_for_update(of=lines)
    found: list[planning.OpenLine] = []
    run_payees: dict[str, planning.RunPayee] = {}
    for r in (await session.execute(statement)).all():
        found.append(planning.OpenLine(r.line_id, r.payee_id, r.amount, r.currency, r.earned_on, r.kind))
        method = domain.PayoutMethod(r.method) if r.method else None
        run_payees[r.payee_id] = planning.RunPayee(
            r.payee_id, r.name, r.payout_currency, method, domain.PayeeStatus(r.status)
        )
    return found, run_payees


async def rates_for(session: AsyncSession, on: date, max_age: timedelta) -> list[Rate]:
    rows = await session.execute(select(rates).where(rates.c.as_of <= on, rates.c.as_of >= on - max_age))
    return [Rate(r.base, r.quote, r.rate, r.as_of, r.source) for r in rows]


def _hold_unbankable(plan: planning.RunPlan, settings: PayoutsSettings) -> planning.RunPlan:
    """Bank payouts need a debtor account of the utility in their currency."""
    kept, held = [], list(plan.held)
    for payout in plan.payouts:
        if (
            payout.method is PayoutMethod.BANK
            and disbursement.debtor_for(settings.debtor_accounts, payout.currency) is None
        ):
            ids = tuple(i.line.line_id for i in payout.items)
            held.append(
                planning.Held(payout.payee_id, "no_debtor_account", f"no debtor account pays {payout.currency}", ids)
            )
        else:
            kept.append(payout)
    return planning.RunPlan(tuple(kept), tuple(held))


async def plan(
    session: AsyncSession, filters: RunFilters, settings: PayoutsSettings, *, lock: bool = False
) -> tuple[planning.RunPlan, dict[str, planning.RunPayee]]:
    """What a run with `filters` would pay now (nothing written)."""
    found, run_payees = await _open_lines(session, filters, lock=lock)
    max_age = timedelta(days=settings.max_rate_age_days)
    result = planning.plan_run(
        found,
        run_payees,
        await rates_for(session, filters.as_of, max_age),
        as_of=filters.as_of,
        minimum_amount=filters.minimum_amount,
        max_rate_age=max_age,
    )
    return _hold_unbankable(result, settings), run_payees


def totals_json(totals: dict[str, Decimal]) -> list[dict[str, str]]:
    return [{"currency": c, "amount": format(a, "f")} for c, a in totals.items()]


def held_json(held: tuple[planning.Held, ...]) -> list[dict[str, Any]]:
    return [
        {"payee_id": h.payee_id, "code": h.code, "detail": h.detail, "field": h.field, "line_ids": list(h.line_ids)}
        for h in held
    ]


async def _payee_details(session: AsyncSession, payee_ids: list[str]) -> dict[str, Any]:
    rows = await session.execute(select(payees).where(payees.c.payee_id.in_(payee_ids)))
    return {r.payee_id: r for r in rows}


async def create_run(
    session: AsyncSession, filters: RunFilters, settings: PayoutsSettings, *, actor: str, idempotency_key: str
) -> str:
    """Lock the chosen lines into Scheduled payouts and ask for approval; returns the run id."""

    async def run() -> str:
        result, _ = await plan(session, filters, settings, lock=True)
        if not result.payouts:
            reasons = "; ".join(f"{h.payee_id}: {h.detail}" for h in result.held) or "no open lines match"
            raise Rejected("nothing_to_pay", f"the run would pay nobody ({reasons})", field="filters")
        now = datetime.now(UTC)
        seq = int((await session.execute(select(run_number_seq.next_value()))).scalar_one())
        run_id = f"RUN-{seq:06d}"
        details = await _payee_details(session, [p.payee_id for p in result.payouts])
        await session.execute(
            runs.insert().values(
                run_id=run_id,
                seq=seq,
                status=RunStatus.PENDING_APPROVAL.value,
                filters=filters.as_json(),
                as_of=filters.as_of,
                totals=totals_json(result.totals()),
                held=held_json(result.held),
                created_by=actor,
                created_at=now,
            )
        )
        for planned in result.payouts:
            payee = details[planned.payee_id]
            pseq = int((await session.execute(select(payout_number_seq.next_value()))).scalar_one())
            payout_id = f"PO-{pseq:06d}"
            destination = payee.stripe_account if planned.method is PayoutMethod.STRIPE else payee.iban
            await session.execute(
                payouts.insert().values(
                    payout_id=payout_id,
                    seq=pseq,
                    run_id=run_id,
                    payee_id=planned.payee_id,
                    amount=planned.amount,
                    currency=planned.currency,
                    method=planned.method.value,
                    destination=destination,
                    bic=payee.bic,
                    status=PayoutStatus.SCHEDULED.value,
                    created_at=now,
                    updated_at=now,
                )
            )
            await session.execute(
                payout_items.insert().values(
                    [
                        {
                            "payout_id": payout_id,
                            "line_id": i.line.line_id,
                            "amount": i.conversion.amount,
                            "currency": i.conversion.currency,
                            "converted": i.conversion.converted,
                            "to_currency": i.conversion.to_currency,
                            "rate": i.conversion.rate,
                            "rate_source": i.conversion.source,
                            "rate_as_of": i.conversion.as_of,
                            "rounding": i.conversion.rounding,
                        }
                        for i in planned.items
                    ]
                )
            )
            await session.execute(
                update(lines)
                .where(lines.c.line_id.in_([i.line.line_id for i in planned.items]))
                .values(status=LineStatus.IN_RUN.value, payout_id=payout_id, blocked_reason=None)
            )
        for held in result.held:
            await session.execute(
                update(lines)
                .where(lines.c.line_id.in_(held.line_ids))
                .values(blocked_reason=f"{held.code}: {held.detail}")
            )
        totals = result.totals()
        single = next(iter(totals.items())) if len(totals) == 1 else None
        approval = await maker_checker.request_approval(
            session,
            approvals,
            topic=Topic.PAYOUTS_EVENTS,
            source=SOURCE,
            kind=RUN_APPROVAL,
            subject=run_id,
            payload={"run_id": run_id},
            requested_by=actor,
            reason=f"payout run of {len(result.payouts)} payouts",
            amount=single[1] if single else None,
            currency=single[0] if single else None,
        )
        await session.execute(update(runs).where(runs.c.run_id == run_id).values(approval_id=approval.approval_id))
        await audit.record(
            session,
            audit_log,
            actor=actor,
            action="run.created",
            subject=run_id,
            after={"filters": filters.as_json(), "totals": totals_json(totals)},
        )
        return run_id

    return await idempotency.once(
        session, idempotency_keys, operation="create_run", key=idempotency_key, request=filters, run=run
    )


async def locked_run(session: AsyncSession, run_id: str) -> Any:
    row = (await session.execute(select(runs).where(runs.c.run_id == run_id).with_for_update())).first()
    if row is None:
        raise NotFound("run_not_found", f"no run {run_id}", field="run_id")
    return row


async def decide_run(
    session: AsyncSession, run_id: str, *, approver: str, approve: bool, reason: str | None = None
) -> maker_checker.Approval:
    """Approve (or reject) a run: only someone other than its maker, applied once under the approval's row lock."""
    run = await locked_run(session, run_id)
    if run.status != RunStatus.PENDING_APPROVAL:
        raise Conflict("already_decided", f"run {run_id} is {run.status}", field="run_id")
    decision = await maker_checker.decide(
        session,
        approvals,
        run.approval_id,
        topic=Topic.PAYOUTS_EVENTS,
        source=SOURCE,
        approver=approver,
        approve=approve,
        reason=reason,
    )
    await apply_run_decision(session, decision)
    return decision


async def apply_run_decision(session: AsyncSession, decision: maker_checker.Approval) -> None:
    run_id = decision.payload["run_id"]
    now = decision.decided_at or datetime.now(UTC)
    approved = decision.status is maker_checker.ApprovalStatus.APPROVED
    run = await locked_run(session, run_id)
    if approved:
        await session.execute(
            update(runs)
            .where(runs.c.run_id == run_id)
            .values(status=RunStatus.APPROVED.value, approved_by=decision.decided_by, approved_at=now)
        )
        await session.execute(
            update(payouts)
            .where(payouts.c.run_id == run_id, payouts.c.status == PayoutStatus.SCHEDULED.value)
            .values(status=PayoutStatus.APPROVED.value, updated_at=now)
        )
        count = len((await session.execute(select(payouts.c.payout_id).where(payouts.c.run_id == run_id))).all())
        data = PayoutRunApproved(
            run_id=run_id,
            approved_by=decision.decided_by or "",
            requested_by=run.created_by,
            payouts=count,
            totals=[Money(amount=Decimal(t["amount"]), currency=t["currency"]) for t in run.totals],
            approved_at=now,
        )
        await stage(
            session, Topic.PAYOUTS_EVENTS, new_envelope("payout_run.approved", source=SOURCE, subject=run_id, data=data)
        )
    else:
        await session.execute(update(runs).where(runs.c.run_id == run_id).values(status=RunStatus.REJECTED.value))
        ids = select(payouts.c.payout_id).where(payouts.c.run_id == run_id)
        await session.execute(
            update(lines).where(lines.c.payout_id.in_(ids)).values(status=LineStatus.OPEN.value, payout_id=None)
        )
    await audit.record(
        session,
        audit_log,
        actor=decision.decided_by or "",
        action="run.approved" if approved else "run.rejected",
        subject=run_id,
        reason=decision.decision_reason,
    )


# --- statuses ---


async def move_payout(
    session: AsyncSession,
    payout: Any,
    target: PayoutStatus,
    *,
    reference: str | None = None,
    reason: str | None = None,
    at: datetime | None = None,
) -> bool:
    """Move a locked payout if its lifecycle allows (a late report changes nothing), with the lines' consequence:
    paid lines are Paid; a failed or returned payout's lines are Open again for the next run."""
    current = PayoutStatus(payout.status)
    if not domain.can_move(current, target):
        return False
    now = at or datetime.now(UTC)
    values: dict[str, Any] = {"status": target.value, "updated_at": now}
    if reference and not payout.reference:
        values["reference"] = reference
    if target is PayoutStatus.SENT:
        values["sent_at"] = now
    elif target is PayoutStatus.PAID:
        values["paid_at"] = now
    else:
        values["failed_at"] = now
    if reason:
        values["failure_reason"] = reason
    await session.execute(update(payouts).where(payouts.c.payout_id == payout.payout_id).values(**values))
    of_payout = lines.c.payout_id == payout.payout_id
    if target is PayoutStatus.PAID:
        await session.execute(update(lines).where(of_payout).values(status=LineStatus.PAID.value))
    elif target in domain.FINAL_UNPAID:
        await session.execute(update(lines).where(of_payout).values(status=LineStatus.OPEN.value, payout_id=None))
    data = PayoutStatusChanged(
        payout_id=payout.payout_id,
        run_id=payout.run_id,
        payee_id=payout.payee_id,
        amount=Money(amount=payout.amount, currency=payout.currency),
        method=payout.method,
        previous_status=current.value,
        status=target.value,
        reference=values.get("reference", payout.reference),
        reason=reason,
        changed_at=now,
    )
    event_type = f"payout.{target.value.lower()}"
    await stage(
        session, Topic.PAYOUTS_EVENTS, new_envelope(event_type, source=SOURCE, subject=payout.payee_id, data=data)
    )
    await audit.record(
        session,
        audit_log,
        actor=SOURCE,
        action=event_type,
        subject=payout.payout_id,
        before={"status": current.value},
        after=values,
        reason=reason,
        at=now,
    )
    return True


async def apply_gateway_status(session: AsyncSession, event: GatewayPayoutStatusChanged) -> None:
    """A Stripe transfer or payout webhook (through gateway_bridge) moves the payout it names."""
    if event.event_type not in domain.GATEWAY_STATUS:
        return
    c = payouts.c
    where = c.payout_id == event.paydesk_payout_id if event.paydesk_payout_id else c.reference == event.object_id
    payout = (await session.execute(select(payouts).where(where).with_for_update())).first()
    if payout is None:
        return  # not money we sent (the platform's own payouts, another system's transfers)
    # An event without `fully_reversed` predates the field and was always taken as a full reversal.
    target = domain.gateway_status(
        event.event_type, PayoutStatus(payout.status), fully_reversed=event.fully_reversed is not False
    )
    if target is None:
        return
    reason = " ".join(x for x in (event.failure_code, event.failure_message) if x) or None
    reference = event.object_id if event.object_type == "transfer" else None
    await move_payout(session, payout, target, reference=reference, reason=reason, at=event.occurred_at)


async def report_bank_status(
    session: AsyncSession, payout_id: str, status: str, *, reason: str | None, actor: str
) -> bool:
    """A bank payout's outcome from a statement line (the reconciliation service, or a billing manager)."""
    try:
        target = PayoutStatus(status)
    except ValueError:
        raise Rejected("unknown_status", "status is Paid, Failed or Returned", field="status") from None
    if target not in (PayoutStatus.PAID, PayoutStatus.FAILED, PayoutStatus.RETURNED):
        raise Rejected("unknown_status", "status is Paid, Failed or Returned", field="status")
    payout = (await session.execute(select(payouts).where(payouts.c.payout_id == payout_id).with_for_update())).first()
    if payout is None:
        raise NotFound("payout_not_found", f"no payout {payout_id}", field="payout_id")
    moved = await move_payout(session, payout, target, reason=reason)
    if not moved and payout.status != target.value:
        raise Conflict(
            "payout_status", f"payout {payout_id} is {payout.status}; it cannot become {target.value}", field="status"
        )
    return moved
