"""Receipts' reads: the stored documents, rendered ahead by the projections."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.receipts import domain
from services.receipts.storage import documents
from shared.errors import NotFound


async def find_document(session: AsyncSession, kind: str, number: str) -> dict[str, Any]:
    """A rendered document (bytes, hashes, content); NotFound until its events have arrived and rendered it."""
    row = (
        (await session.execute(select(documents).where(documents.c.kind == kind, documents.c.number == number)))
        .mappings()
        .first()
    )
    if row is None:
        what = "receipt" if kind == domain.RECEIPT else "credit note"
        raise NotFound(f"{kind}_not_found", f"no {what} {number}")
    return dict(row)
