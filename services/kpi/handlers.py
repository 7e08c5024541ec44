"""KPI's event handlers and queries."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.kpi import domain
from services.kpi.storage import daily_collections
from shared.contracts import Envelope, parse_data
from shared.contracts.events import PaymentPosted


async def on_payment_posted(session: AsyncSession, envelope: Envelope) -> None:
    posted = parse_data(envelope, PaymentPosted)
    statement = pg_insert(daily_collections).values(
        day=posted.payment_date, currency=posted.amount.currency, payments=1, collected=posted.amount.amount
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["day", "currency"],
            set_={
                "payments": daily_collections.c.payments + 1,
                "collected": daily_collections.c.collected + statement.excluded.collected,
            },
        )
    )


PAYMENT_HANDLERS = {"payment.posted": on_payment_posted}


async def collected_in(session: AsyncSession, period: str) -> dict[str, Any]:
    start, end = domain.month_bounds(period)
    rows = (
        await session.execute(
            select(
                daily_collections.c.currency,
                func.sum(daily_collections.c.payments),
                func.sum(daily_collections.c.collected),
            )
            .where(daily_collections.c.day >= start, daily_collections.c.day < end)
            .group_by(daily_collections.c.currency)
        )
    ).all()
    return {
        "period": period,
        "total_collected": [{"currency": c, "amount": str(Decimal(t)), "payments": int(n)} for c, n, t in rows],
    }
