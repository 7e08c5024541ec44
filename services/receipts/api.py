"""Receipts' HTTP routes: receipts and credit notes as PDF, and a receipt's print view. Any staff member reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse, Response

from services.receipts import domain, queries, views
from services.receipts.commands import Renderings
from shared.auth import Actor, Role, require_account, require_roles
from shared.service import Service

# Any staff member may read documents (admin passes every check).
ANY_STAFF = (Role.CUSTOMER_EXECUTIVE, Role.RECOVERY_EXECUTIVE, Role.BILLING_MANAGER)
Staff = Annotated[Actor, require_roles(*ANY_STAFF)]
# Staff read any account's documents; a customer only their own (another account's answers 404, never 403).
AccountReader = Annotated[Actor, require_account(*ANY_STAFF)]
Download = Annotated[bool, Query(description="Serve as an attachment (Download) rather than inline (view).")]


def router(service: Service, renderings: Renderings) -> APIRouter:
    """Documents are stored when their events arrive; a PDF the render worker has not rendered yet is rendered here."""
    routes = APIRouter(tags=["receipts"])

    # Registered before the print view: `/receipts/{receipt_number}` would otherwise also match `R-5001.pdf`.
    @routes.get("/receipts/{receipt_number}.pdf", response_class=Response)
    async def receipt_pdf(receipt_number: str, actor: Staff, download: Download = False) -> Response:
        async with service.sessions() as session:
            row = await queries.find_document(session, domain.RECEIPT, receipt_number)
        return views.pdf(await renderings.with_pdf(row), download)

    @routes.get("/receipts/{receipt_number}", response_class=HTMLResponse)
    async def receipt_print_view(receipt_number: str, actor: Staff) -> HTMLResponse:
        async with service.sessions() as session:
            row = await queries.find_document(session, domain.RECEIPT, receipt_number)
        return views.receipt_print_view(row, receipt_number)

    @routes.get("/receipts/{receipt_number}/versions")
    async def receipt_versions(receipt_number: str, actor: Staff) -> dict[str, object]:
        """Every version of a receipt re-issued after adjustments: the current one and those it superseded."""
        async with service.sessions() as session:
            return await queries.receipt_versions_of(session, receipt_number)

    @routes.get("/receipts/{receipt_number}/versions/{version}.pdf", response_class=Response)
    async def superseded_pdf(
        receipt_number: str,
        version: Annotated[int, Path(ge=1, le=2_147_483_647, description="A superseded version, from 1.")],
        actor: Staff,
        download: Download = False,
    ) -> Response:
        async with service.sessions() as session:
            return views.pdf(await queries.superseded_version(session, receipt_number, version), download)

    @routes.get("/credit-notes/{number}.pdf", response_class=Response)
    async def credit_note_pdf(number: str, actor: Staff, download: Download = False) -> Response:
        async with service.sessions() as session:
            row = await queries.find_document(session, domain.CREDIT_NOTE, number)
        return views.pdf(await renderings.with_pdf(row), download)

    @routes.get("/accounts/{account_number}/receipts", tags=["self-service"])
    async def account_receipts(
        account_number: str,
        actor: AccountReader,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> dict[str, object]:
        """The account's receipts, newest first."""
        async with service.sessions() as session:
            rows, next_cursor = await queries.account_receipts(session, account_number, limit=limit, cursor=cursor)
        return {"receipts": [views.account_receipt_row(r) for r in rows], "next_cursor": next_cursor}

    @routes.get("/accounts/{account_number}/receipts/{receipt_number}.pdf", response_class=Response)
    async def account_receipt_pdf(
        account_number: str, receipt_number: str, actor: AccountReader, download: Download = False
    ) -> Response:
        """A receipt of this account as PDF; one of another account answers 404 as a missing one does."""
        async with service.sessions() as session:
            row = await queries.account_document(session, domain.RECEIPT, receipt_number, account_number)
        return views.pdf(await renderings.with_pdf(row), download)

    return routes
