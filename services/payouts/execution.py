"""Executing an approved run: each Stripe payout in its own transaction under its row lock with its one
idempotency key, then one pain.001 file per debtor account for the bank payouts.

Two executions at once serialise on each payout's row and the second sees Sent. Each request is preceded by a
committed `send_attempts` row; a crash after Stripe answered but before the commit leaves the payout Approved
with that row, and the next execution first lists the run's transfers at Stripe and records the one it finds.
Only when Stripe has none does it send again, with the same key (so a request still in flight is deduplicated
within Stripe's 24 hours of keeping keys).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import stripe
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.payouts import disbursement
from services.payouts.commands import SOURCE
from services.payouts.domain import PayoutMethod, PayoutStatus, RunStatus
from services.payouts.runs import locked_run, move_payout
from services.payouts.settings import PayoutsSettings
from services.payouts.storage import audit_log, bank_files, payees, payouts, runs, send_attempts
from shared import audit
from shared.contracts import Topic, new_envelope
from shared.contracts.events import PayoutRunExecuted
from shared.errors import Conflict
from shared.outbox import stage


@dataclass
class Execution:
    run_id: str
    sent: list[str] = field(default_factory=list)
    # Sent by an earlier attempt whose answer was lost, found at Stripe (included in `sent`).
    recovered: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    retry_later: list[dict[str, str]] = field(default_factory=list)
    bank_files: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


# Called after Stripe answered and before the commit; tests use it to crash exactly there.
AfterSend = Callable[[str], Awaitable[None]]


async def execute_run(
    sessions: async_sessionmaker[AsyncSession],
    run_id: str,
    *,
    actor: str,
    client: stripe.StripeClient,
    settings: PayoutsSettings,
    after_send: AfterSend | None = None,
) -> Execution:
    """Send every approved payout of an approved run once; safe to call again (and concurrently)."""
    result = Execution(run_id)
    async with sessions() as session, session.begin():
        run = await locked_run(session, run_id)
        if run.status not in (RunStatus.APPROVED, RunStatus.EXECUTED):
            raise Conflict(
                "run_not_approved", f"run {run_id} is {run.status}; only an approved run is executed", field="run_id"
            )
        rows = (
            await session.execute(
                select(payouts.c.payout_id, payouts.c.method, payouts.c.status)
                .where(payouts.c.run_id == run_id)
                .order_by(payouts.c.seq)
            )
        ).all()
    for row in rows:
        if row.method != PayoutMethod.STRIPE:
            continue
        await _send_stripe(sessions, row.payout_id, client, result, after_send)
    await _send_bank(sessions, run_id, settings, result)
    async with sessions() as session, session.begin():
        run = await locked_run(session, run_id)
        now = datetime.now(UTC)
        if run.status == RunStatus.APPROVED:
            await session.execute(
                update(runs)
                .where(runs.c.run_id == run_id)
                .values(status=RunStatus.EXECUTED.value, executed_by=actor, executed_at=now)
            )
        if result.sent or run.status == RunStatus.APPROVED:
            data = PayoutRunExecuted(
                run_id=run_id, executed_by=actor, sent=len(result.sent), bank_files=result.bank_files, executed_at=now
            )
            await stage(
                session,
                Topic.PAYOUTS_EVENTS,
                new_envelope("payout_run.executed", source=SOURCE, subject=run_id, data=data),
            )
        await audit.record(
            session, audit_log, actor=actor, action="run.executed", subject=run_id, after=result.as_json()
        )
    return result


async def _send_stripe(
    sessions: async_sessionmaker[AsyncSession],
    payout_id: str,
    client: stripe.StripeClient,
    result: Execution,
    after_send: AfterSend | None,
) -> None:
    async with sessions() as session, session.begin():
        payout = (
            await session.execute(select(payouts).where(payouts.c.payout_id == payout_id).with_for_update())
        ).one()
        if payout.status != PayoutStatus.APPROVED:
            result.already.append(payout_id)
            return
        request = disbursement.TransferRequest(
            payout_id, payout.run_id, payout.payee_id, payout.destination, payout.amount, payout.currency
        )
        try:
            if await _attempted(session, payout_id):
                # The outcome of an earlier request is unknown (a crash, a timeout), and its idempotency key may be
                # forgotten by now: what Stripe has decides, never a second request.
                found = await disbursement.find_transfer(client, request)
                if found is not None:
                    await move_payout(session, payout, PayoutStatus.SENT, reference=found)
                    result.sent.append(payout_id)
                    result.recovered.append(payout_id)
                    return
            await _record_attempt(sessions, payout_id)
            transfer_id = await disbursement.send_transfer(client, request)
        except disbursement.TRANSIENT as exc:
            # Nothing recorded: the payout stays Approved and the next execution sends the same key.
            result.retry_later.append({"payout_id": payout_id, "error": f"{type(exc).__name__}: {exc}"[:300]})
            return
        except stripe.StripeError as exc:
            reason = f"stripe refused the transfer: {exc.user_message or exc}"[:500]
            await move_payout(session, payout, PayoutStatus.FAILED, reason=reason)
            result.failed.append({"payout_id": payout_id, "error": reason})
            return
        if after_send is not None:
            await after_send(payout_id)
        await move_payout(session, payout, PayoutStatus.SENT, reference=transfer_id)
        result.sent.append(payout_id)


async def _attempted(session: AsyncSession, payout_id: str) -> bool:
    row = await session.execute(select(send_attempts.c.payout_id).where(send_attempts.c.payout_id == payout_id))
    return row.first() is not None


async def _record_attempt(sessions: async_sessionmaker[AsyncSession], payout_id: str) -> None:
    """Committed before the request, in a transaction of its own, so a crash after it leaves the trace."""
    now = datetime.now(UTC)
    statement = pg_insert(send_attempts).values(
        payout_id=payout_id, attempts=1, first_attempt_at=now, last_attempt_at=now
    )
    statement = statement.on_conflict_do_update(
        index_elements=[send_attempts.c.payout_id],
        set_={"attempts": send_attempts.c.attempts + 1, "last_attempt_at": now},
    )
    async with sessions() as session, session.begin():
        await session.execute(statement)


async def _send_bank(
    sessions: async_sessionmaker[AsyncSession], run_id: str, settings: PayoutsSettings, result: Execution
) -> None:
    """One pain.001 file per debtor account, made and recorded with its payouts' Sent in one transaction."""
    async with sessions() as session, session.begin():
        pending = (
            await session.execute(
                select(payouts, payees.c.name)
                .select_from(payouts.join(payees, payees.c.payee_id == payouts.c.payee_id))
                .where(
                    payouts.c.run_id == run_id,
                    payouts.c.method == PayoutMethod.BANK.value,
                    payouts.c.status == PayoutStatus.APPROVED.value,
                )
                .order_by(payouts.c.seq)
                .with_for_update(of=payouts)
            )
        ).all()
        by_account: dict[str, list[Any]] = defaultdict(list)
        for payout in pending:
            debtor = disbursement.debtor_for(settings.debtor_accounts, payout.currency)
            if debtor is None:
                result.retry_later.append(
                    {"payout_id": payout.payout_id, "error": f"no debtor account pays {payout.currency}"}
                )
                continue
            by_account[debtor.account_id].append(payout)
        accounts = {a.account_id: a for a in settings.debtor_accounts}
        for account_id, group in by_account.items():
            debtor = accounts[account_id]
            transfers = [
                disbursement.CreditTransfer(
                    p.payout_id,
                    p.name,
                    p.destination,
                    p.bic,
                    p.amount,
                    p.currency,
                    f"Paydesk payout {p.payout_id} ({run_id})",
                )
                for p in group
            ]
            made = disbursement.credit_transfer_file(debtor, transfers, execution_date=datetime.now(UTC).date())
            file_id = disbursement.file_id(run_id, account_id)
            await session.execute(
                bank_files.insert().values(
                    file_id=file_id,
                    run_id=run_id,
                    debtor_account=account_id,
                    currency=debtor.currency,
                    message_id=made.message_id,
                    payouts=made.count,
                    control_sum=made.control_sum,
                    content=made.content,
                    created_at=datetime.now(UTC),
                )
            )
            for payout in group:
                await session.execute(
                    update(payouts).where(payouts.c.payout_id == payout.payout_id).values(bank_file_id=file_id)
                )
                await move_payout(session, payout, PayoutStatus.SENT, reference=payout.payout_id)
                result.sent.append(payout.payout_id)
            result.bank_files.append(file_id)
