"""Receipts' reads: the stored documents (content at once, the PDF once the render worker got to it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.receipts import domain
from services.receipts.storage import documents, receipt_versions, receipts
from shared.errors import NotFound
from shared.paging import after_key, decode_cursor, page

# The sort an account's receipt list names in its cursors.
ACCOUNT_SORT = "receipts:account:newest"


async def find_document(session: AsyncSession, kind: str, number: str) -> dict[str, Any]:
    """A stored document (content, hashes, and its PDF or None until rendered); NotFound until its events arrived."""
    row = (
        (await session.execute(select(documents).where(documents.c.kind == kind, documents.c.number == number)))
        .mappings()
        .first()
    )
    if row is None:
        what = "receipt" if kind == domain.RECEIPT else "credit note"
        raise NotFound(f"{kind}_not_found", f"no {what} {number}")
    return dict(row)


async def account_document(session: AsyncSession, kind: str, number: str, account_number: str) -> dict[str, Any]:
    """A document of this account; another account's answers exactly as a missing one, so none can be probed."""
    row = await find_document(session, kind, number)
    if row["account_number"] != account_number:
        what = "receipt" if kind == domain.RECEIPT else "credit note"
        raise NotFound(f"{kind}_not_found", f"no {what} {number}")
    return row


async def account_receipts(
    session: AsyncSession, account_number: str, *, limit: int, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """The account's receipts, newest first, one keyset page and the cursor of the next."""
    columns = [receipts.c.posted_at, receipts.c.receipt_number]
    query = (
        select(
            receipts.c.receipt_number, receipts.c.amount, receipts.c.currency, receipts.c.posted_at, receipts.c.version
        )
        .where(receipts.c.account_number == account_number)
        .order_by(*(c.desc() for c in columns))
        .limit(limit + 1)
    )
    if cursor is not None:
        query = query.where(
            after_key(columns, decode_cursor(cursor, sort=ACCOUNT_SORT, types=(datetime, str)), descending=True)
        )
    rows = [dict(r) for r in (await session.execute(query)).mappings().all()]
    return page(rows, limit, sort=ACCOUNT_SORT, key=lambda r: (r["posted_at"], r["receipt_number"]))


async def receipt_versions_of(session: AsyncSession, receipt_number: str) -> dict[str, Any]:
    """The receipt's current version and every earlier one, each marked superseded by the next."""
    current = (
        await session.execute(select(receipts.c.version).where(receipts.c.receipt_number == receipt_number))
    ).scalar_one_or_none()
    if current is None:
        raise NotFound("receipt_not_found", f"no receipt {receipt_number}")
    earlier = (
        await session.execute(
            select(
                receipt_versions.c.version,
                receipt_versions.c.document_hash,
                receipt_versions.c.superseded_at,
                receipt_versions.c.superseded_by,
            )
            .where(receipt_versions.c.receipt_number == receipt_number)
            .order_by(receipt_versions.c.version)
        )
    ).all()
    return {
        "receipt_number": receipt_number,
        "current_version": current,
        "versions": [
            {
                "version": v.version,
                "status": "Superseded",
                "document_hash": v.document_hash,
                "superseded_at": v.superseded_at.isoformat(),
                "superseded_by": v.superseded_by,
                "pdf": f"/receipts/{receipt_number}/versions/{v.version}.pdf",
            }
            for v in earlier
        ]
        + [{"version": current, "status": "Current", "pdf": f"/receipts/{receipt_number}.pdf"}],
    }


async def superseded_version(session: AsyncSession, receipt_number: str, version: int) -> dict[str, Any]:
    row = (
        (
            await session.execute(
                select(receipt_versions).where(
                    receipt_versions.c.receipt_number == receipt_number, receipt_versions.c.version == version
                )
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound("receipt_version_not_found", f"no superseded version {version} of receipt {receipt_number}")
    return {**dict(row), "number": receipt_number, "revision": version}
