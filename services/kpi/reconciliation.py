"""The daily reconciliation summary's read model, kept from `reconciliation.events.v1`: lines imported and
reconciled per local day, and every exception with when it was raised and resolved (so its age on any day is
known). A consumer group of its own (`paydesk.kpi.reconciliation`), apart from the payment KPIs' projections."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.kpi import domain
from services.kpi.storage import reconciliation_days, reconciliation_exceptions
from shared.contracts import Envelope, Topic, parse_data
from shared.contracts.events import (
    BankLineMatched,
    ReconciliationExceptionRaised,
    ReconciliationExceptionResolved,
    StatementImported,
)
from shared.messaging import Subscription

# Resolutions that settle a bank line without a `bank_line.matched` for it: ignored, or split into parts (the
# parts' amounts come with their own matches).
LINE_SETTLED_BY = ("ignore", "split")


class ReconciliationSummary:
    def __init__(self, time_zone: ZoneInfo) -> None:
        self.time_zone = time_zone

    def _day(self, moment: datetime) -> date:
        return domain.local_day(moment, self.time_zone)

    async def _add(self, session: AsyncSession, day: date, currency: str, counters: Mapping[str, Any]) -> None:
        statement = pg_insert(reconciliation_days).values(day=day, currency=currency, **counters)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["day", "currency"],
                set_={name: reconciliation_days.c[name] + statement.excluded[name] for name in counters},
            )
        )

    async def on_statement_imported(self, session: AsyncSession, envelope: Envelope) -> None:
        imported = parse_data(envelope, StatementImported)
        total = imported.lines_total.amount if imported.lines_total else Decimal(0)
        await self._add(
            session,
            self._day(imported.imported_at),
            imported.opening_balance.currency,
            {"lines_imported": imported.line_count, "amount_imported": total},
        )

    async def on_bank_line_matched(self, session: AsyncSession, envelope: Envelope) -> None:
        matched = parse_data(envelope, BankLineMatched)
        pushed = any(line_id.startswith("PL-") for line_id in matched.bank_line_ids)
        await self._add(
            session,
            self._day(matched.matched_at),
            matched.amount.currency,
            {
                "lines_reconciled": domain.statement_line_count(matched.bank_line_ids),
                # Pushed lines were never counted in; a split part's amount is part of its imported line's.
                "amount_reconciled": Decimal(0) if pushed else abs(matched.amount.amount),
            },
        )

    async def on_exception_raised(self, session: AsyncSession, envelope: Envelope) -> None:
        raised = parse_data(envelope, ReconciliationExceptionRaised)
        await session.execute(
            pg_insert(reconciliation_exceptions)
            .values(
                exception_id=raised.exception_id,
                kind=raised.kind,
                subject=raised.subject,
                amount=raised.amount.amount,
                currency=raised.amount.currency,
                raised_at=raised.raised_at,
            )
            .on_conflict_do_nothing()
        )

    async def on_exception_resolved(self, session: AsyncSession, envelope: Envelope) -> None:
        resolved = parse_data(envelope, ReconciliationExceptionResolved)
        # Raised and resolved share the subject, so the raise was applied first (same key, same partition).
        row = (
            await session.execute(
                update(reconciliation_exceptions)
                .where(reconciliation_exceptions.c.exception_id == resolved.exception_id)
                .values(resolved_at=resolved.resolved_at, resolution=resolved.resolution)
                .returning(reconciliation_exceptions)
            )
        ).first()
        kind, _, line_id = resolved.subject.partition(":")
        if row is None or kind != "line" or resolved.resolution not in LINE_SETTLED_BY:
            return
        amount = abs(row.amount) if resolved.resolution == "ignore" and not line_id.startswith("PL-") else Decimal(0)
        await self._add(
            session,
            self._day(resolved.resolved_at),
            row.currency,
            {"lines_reconciled": domain.statement_line_count([line_id]), "amount_reconciled": amount},
        )

    def subscriptions(self) -> list[Subscription]:
        return [
            Subscription(
                "reconciliation",
                Topic.RECONCILIATION_EVENTS,
                {
                    "statement.imported": self.on_statement_imported,
                    "bank_line.matched": self.on_bank_line_matched,
                    "reconciliation.exception_raised": self.on_exception_raised,
                    "reconciliation.exception_resolved": self.on_exception_resolved,
                },
            )
        ]


def subscriptions(time_zone: ZoneInfo) -> list[Subscription]:
    return ReconciliationSummary(time_zone).subscriptions()
