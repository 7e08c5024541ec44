"""Payments' settings, changed by an admin: each change in the audit trail, with its before and after."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import domain
from services.payments.queries import load_settings
from services.payments.storage import audit_log
from services.payments.storage import settings as settings_table
from shared import audit


async def save_setting(session: AsyncSession, key: str, value: Any, actor: str) -> domain.PaymentSettings:
    """Change one setting, with its before and after in the audit log. Locks the row against a racing change."""
    before = (
        await session.execute(select(settings_table.c.value).where(settings_table.c.key == key).with_for_update())
    ).scalar_one_or_none()
    await session.execute(
        pg_insert(settings_table)
        .values(key=key, value=value, updated_by=actor)
        .on_conflict_do_update(
            index_elements=["key"], set_={"value": value, "updated_by": actor, "updated_at": datetime.now(UTC)}
        )
    )
    await audit.record(
        session, audit_log, actor=actor, action="settings.changed", subject=key, before=before, after=value
    )
    return await load_settings(session)


async def change_choices(session: AsyncSession, key: str, values: list[str], actor: str) -> domain.PaymentSettings:
    """Replace the channels or the payment methods staff may choose from."""
    return await save_setting(session, key, list(domain.check_choices(values, "values")), actor)


async def change_overpayment_threshold(session: AsyncSession, amount: Decimal, actor: str) -> domain.PaymentSettings:
    return await save_setting(session, "overpayment_threshold", f"{amount:.2f}", actor)


async def change_number_formats(
    session: AsyncSession, requested: dict[str, domain.NumberFormat], actor: str
) -> domain.PaymentSettings:
    """Change some document number formats; the others keep theirs, and no number is ever issued twice."""
    formats = domain.change_number_formats(await load_settings(session), requested)
    return await save_setting(session, "number_formats", {k: vars(v) for k, v in formats.items()}, actor)
