"""The settlement worker: resolves payout events into one settlement event per payment, outside the webhook.

A payout webhook only says "payout po_... was paid"; which payments it carried is known only by listing the
payout's balance transactions through the Stripe API. That call can be slow or fail, so the webhook just
queues a payout job and answers; this worker takes jobs (SKIP LOCKED, so several instances share them),
calls Stripe with retries, and stages the settlement events in the same transaction that closes the job.
The first job of a payout also stages `gateway.payout_listed` (the payout and all its balance transactions, for
reconciliation), and a job with a later status (paid after created, failed after paid) stages it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe
from prometheus_client import Counter
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from services.gateway_bridge import commands, domain
from services.gateway_bridge.settings import GatewayBridgeSettings
from services.gateway_bridge.storage import listed_payouts, payment_intents, payout_jobs
from shared.contracts import Topic
from shared.contracts.events import (
    GatewayPayoutListed,
    GatewaySettlementStatusChanged,
    Money,
    PayoutBalanceTransaction,
)
from shared.money import quantize
from shared.outbox import stage

log = logging.getLogger(__name__)

# Worth trying again: the network, Stripe's own errors, rate limits. A 4xx such as an unknown payout or a
# bad key will not get better by retrying and sends the job to the DLQ at once.
TRANSIENT = (stripe.APIConnectionError, stripe.APIError, stripe.RateLimitError)

SETTLEMENTS = Counter("paydesk_gateway_settlements_total", "Payments whose payout status was published", ["status"])


def stripe_client(settings: GatewayBridgeSettings) -> stripe.StripeClient:
    """A Stripe client on `STRIPE_API_BASE`; retries are ours (tenacity), not the library's."""
    return stripe.StripeClient(
        settings.stripe_api_key.get_secret_value() or "sk_unset",
        base_addresses={"api": settings.stripe_api_base},
        http_client=stripe.HTTPXClient(timeout=10),
        max_network_retries=0,
    )


async def list_payout_transactions(client: stripe.StripeClient, payout_id: str) -> list[dict[str, Any]]:
    """Every balance transaction of a payout, with its source (the charge) expanded, across all pages."""
    page = await client.v1.balance_transactions.list_async(
        params={"payout": payout_id, "expand": ["data.source"], "limit": 100}
    )
    return [transaction.to_dict() async for transaction in page.auto_paging_iter()]


async def settle_payout(session: AsyncSession, job: Any, balance_transactions: list[dict[str, Any]]) -> int:
    """Stage one `gateway.settlement_status_changed` per payment in the payout; returns how many."""
    items = domain.settlement_items(balance_transactions)
    published = 0
    # Lock intents in one order so two payouts sharing payments never deadlock.
    for item in sorted(items, key=lambda i: (i.payment_intent_id or "", i.charge_id)):
        key = f"{job.event_id}/{item.charge_id}"
        event = {"id": job.event_id, "type": f"payout.{job.payout_status}", "data": {"object": {"id": job.payout_id}}}
        if item.payment_intent_id is None:
            reason = f"charge {item.charge_id} in payout {job.payout_id} has no payment_intent"
            await commands.dead_letter(session, event, reason, subject=job.payout_id, key=key)
            continue
        row = (
            await session.execute(
                select(payment_intents)
                .where(payment_intents.c.payment_intent_id == item.payment_intent_id)
                .with_for_update()
            )
        ).first()
        if row is None:
            reason = (
                f"payment intent {item.payment_intent_id} (charge {item.charge_id}) in payout {job.payout_id} "
                "is unknown: metadata.account_number missing"
            )
            await commands.dead_letter(session, event, reason, subject=item.payment_intent_id, key=key)
            continue
        forward = domain.moves_forward(row.payout_status, job.payout_status, domain.PAYOUT_RANK)
        payout_status = domain.later(row.payout_status, job.payout_status, domain.PAYOUT_RANK)
        view = domain.current_view(row.gateway_status, payout_status)
        await session.execute(
            update(payment_intents)
            .where(payment_intents.c.payment_intent_id == item.payment_intent_id)
            .values(
                payout_status=payout_status,
                payout_id=job.payout_id if forward else row.payout_id,
                webhook_status=view.webhook_status,
                settlement_status=view.settlement_status,
                events_applied=row.events_applied + 1,
                updated_at=datetime.now(UTC),
            )
        )
        data = GatewaySettlementStatusChanged(
            gateway_event_id=job.event_id,
            payment_intent_id=item.payment_intent_id,
            payout_id=job.payout_id,
            payout_status=job.payout_status,
            webhook_status=domain.SETTLEMENT_WEBHOOK_STATUS[job.payout_status],
            settlement_status=domain.SETTLEMENT_STATUS[job.payout_status],
            occurred_at=job.occurred_at,
            account_number=row.account_number,
            superseded=not forward,
            initiated_at=row.initiated_at,
            amount=Money(amount=quantize(row.amount, row.currency), currency=row.currency),
        )
        await stage(
            session,
            Topic.GATEWAY_EVENTS,
            commands.gateway_envelope("gateway.settlement_status_changed", row.account_number, data, key=key),
        )
        SETTLEMENTS.labels(job.payout_status).inc()
        published += 1
    return published


def _money(amount: domain.Amount) -> Money:
    return Money(amount=amount.value, currency=amount.currency)


async def list_payout(session: AsyncSession, job: Any, balance_transactions: list[dict[str, Any]]) -> bool:
    """Stage `gateway.payout_listed` for the job's payout unless it was listed with this status or a later one;
    True if staged.

    Once per payout and status, whichever of its jobs (a redelivery under a new event id, a re-run) gets here
    first: the `listed_payouts` row commits with the event. A later status (a listed payout that is then paid,
    or fails days after it was paid because the bank returned it) lists it again with that status, so
    reconciliation does not keep expecting a deposit that will never arrive. An earlier one changes nothing.
    """
    if job.amount is None or job.currency is None or job.arrival_date is None:
        log.warning("payout not listed: its webhook lacked amount or arrival date", extra={"payout_id": job.payout_id})
        return False
    try:
        transactions = domain.payout_transactions(job.payout_id, balance_transactions)
    except domain.Unroutable as exc:
        event = {"id": job.event_id, "type": f"payout.{job.payout_status}", "data": {"object": {"id": job.payout_id}}}
        reason = f"payout {job.payout_id} not listed: a balance transaction is unreadable: {exc}"
        await commands.dead_letter(session, event, reason, subject=job.payout_id, key=f"payout_listed/{job.event_id}")
        return False
    first = (
        await session.execute(
            pg_insert(listed_payouts)
            .values(payout_id=job.payout_id, event_id=job.event_id, status=job.payout_status)
            .on_conflict_do_nothing(index_elements=["payout_id"])
            .returning(listed_payouts.c.payout_id)
        )
    ).first()
    key = f"payout_listed/{job.payout_id}"
    if first is None:
        listed = (
            await session.execute(
                select(listed_payouts.c.status).where(listed_payouts.c.payout_id == job.payout_id).with_for_update()
            )
        ).one()
        # Rows listed before the status was kept (null) are listed once more by the next job.
        if listed.status is not None and not domain.moves_forward(listed.status, job.payout_status, domain.PAYOUT_RANK):
            return False
        await session.execute(
            update(listed_payouts)
            .where(listed_payouts.c.payout_id == job.payout_id)
            .values(status=job.payout_status, event_id=job.event_id, listed_at=datetime.now(UTC))
        )
        key = f"payout_listed/{job.payout_id}/{job.payout_status}"
    intents = {t.payment_intent_id for t in transactions if t.payment_intent_id}
    accounts = dict(
        (
            await session.execute(
                select(payment_intents.c.payment_intent_id, payment_intents.c.account_number).where(
                    payment_intents.c.payment_intent_id.in_(intents)
                )
            )
        ).all()
    )
    data = GatewayPayoutListed(
        payout_id=job.payout_id,
        amount=Money(amount=quantize(job.amount, job.currency), currency=job.currency),
        arrival_date=job.arrival_date,
        status=job.stripe_status or job.payout_status,
        balance_transactions=[
            PayoutBalanceTransaction(
                balance_transaction_id=t.balance_transaction_id,
                type=t.type,
                amount=_money(t.amount),
                fee=_money(t.fee),
                net=_money(t.net),
                payment_intent_id=t.payment_intent_id,
                source_id=t.source_id,
                account_number=accounts.get(t.payment_intent_id) if t.payment_intent_id else None,
            )
            for t in transactions
        ],
        listed_at=datetime.now(UTC),
    )
    await stage(
        session,
        Topic.GATEWAY_EVENTS,
        commands.gateway_envelope("gateway.payout_listed", job.payout_id, data, key=key),
    )
    return True


class SettlementWorker:
    def __init__(
        self,
        settings: GatewayBridgeSettings,
        sessions: async_sessionmaker[AsyncSession],
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.client: stripe.StripeClient | None = None
        self._wake = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        """A payout job was queued: look now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        self.client = stripe_client(self.settings)
        while not self._stopping:
            try:
                if await self.run_once():
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("settlement worker failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.settlement_poll_seconds)
            self._wake.clear()

    async def fetch(self, payout_id: str) -> list[dict[str, Any]]:
        assert self.client is not None, "run() creates the client"
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(4),
            wait=wait_exponential(multiplier=0.2, max=2.0),
            retry=retry_if_exception_type(TRANSIENT),
            reraise=True,
        ):
            with attempt:
                return await list_payout_transactions(self.client, payout_id)
        raise AssertionError("unreachable")  # pragma: no cover

    async def run_once(self) -> bool:
        """Resolve one due payout job; False if there was none."""
        async with self.sessions() as session, session.begin():
            job = (
                await session.execute(
                    select(payout_jobs)
                    .where(payout_jobs.c.done_at.is_(None), payout_jobs.c.next_attempt_at <= datetime.now(UTC))
                    .order_by(payout_jobs.c.id)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                )
            ).first()
            if job is None:
                return False
            now = datetime.now(UTC)
            try:
                transactions = await self.fetch(job.payout_id)
            except Exception as exc:
                attempts = job.attempts + 1
                permanent = not isinstance(exc, TRANSIENT) or attempts >= self.settings.settlement_max_attempts
                error = f"{type(exc).__name__}: {exc}"[:2000]
                values: dict[str, Any] = {"attempts": attempts, "last_error": error}
                if permanent:
                    values["done_at"] = now
                    event = {"id": job.event_id, "type": f"payout.{job.payout_status}", "data": {"object": {}}}
                    reason = f"listing balance transactions of payout {job.payout_id} failed: {error}"
                    await commands.dead_letter(session, event, reason, subject=job.payout_id, key=job.event_id)
                else:
                    values["next_attempt_at"] = now + timedelta(seconds=self.settings.settlement_retry_seconds)
                log.warning("payout look-up failed", extra={"payout_id": job.payout_id, "permanent": permanent})
                await session.execute(update(payout_jobs).where(payout_jobs.c.id == job.id).values(values))
            else:
                await settle_payout(session, job, transactions)
                await list_payout(session, job, transactions)
                await session.execute(
                    update(payout_jobs)
                    .where(payout_jobs.c.id == job.id)
                    .values(attempts=job.attempts + 1, done_at=now, last_error=None)
                )
        return True
