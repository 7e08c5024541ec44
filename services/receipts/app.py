"""The receipts service: keeps receipts and credit notes in step with the events; serves them as PDF and print view."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response

from services.receipts import domain, handlers
from services.receipts.domain import Document, DocumentStyle, Letterhead
from services.receipts.rendering import PdfRenderer, print_view
from services.receipts.settings import ReceiptsSettings
from services.receipts.storage import plumbing
from shared.auth import Actor, Role, require_roles
from shared.contracts import Topic
from shared.messaging import Subscription
from shared.service import Service

# Any staff member may read documents (admin passes every check).
ANY_STAFF = (Role.CUSTOMER_EXECUTIVE, Role.RECOVERY_EXECUTIVE, Role.BILLING_MANAGER)
Download = Annotated[bool, Query(description="Serve as an attachment (Download) rather than inline (view).")]


def document_style(settings: ReceiptsSettings) -> DocumentStyle:
    style = DocumentStyle(
        Letterhead(settings.utility_name, settings.utility_address, settings.utility_contact),
        date_format=settings.date_format,
        timezone=settings.timezone,
    )
    style.day(domain.NOT_YET_POSTED)  # a bad zone or pattern fails at start-up, not on the first event
    return style


def _pdf(row: dict[str, Any], download: bool) -> Response:
    number = str(row["number"])
    disposition = "attachment" if download else "inline"
    return Response(
        bytes(row["pdf"]),
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'{disposition}; filename="{number}.pdf"',
            "ETag": f'"{row["sha256"]}"',
            "X-Document-Hash": str(row["document_hash"]),
            "X-Document-Revision": str(row["revision"]),
        },
    )


def create_service(settings: ReceiptsSettings | None = None) -> Service:
    settings = settings or ReceiptsSettings()
    service = Service(settings, plumbing, title="Paydesk receipts")
    documents = handlers.DocumentHandlers(PdfRenderer(), document_style(settings))
    service.subscribe(Subscription("payments", Topic.PAYMENTS_EVENTS, documents.payment_handlers))
    service.subscribe(Subscription("credit_notes", Topic.CREDITNOTES_EVENTS, documents.credit_note_handlers))
    service.publishes(Topic.RECEIPTS_EVENTS, ["receipt.rendered"])

    router = APIRouter(tags=["receipts"])

    # Registered before the print view: `/receipts/{receipt_number}` would otherwise also match `R-5001.pdf`.
    @router.get("/receipts/{receipt_number}.pdf", response_class=Response)
    async def receipt_pdf(
        receipt_number: str, actor: Annotated[Actor, require_roles(*ANY_STAFF)], download: Download = False
    ) -> Response:
        async with service.sessions() as session:
            return _pdf(await handlers.find_document(session, domain.RECEIPT, receipt_number), download)

    @router.get("/receipts/{receipt_number}", response_class=HTMLResponse)
    async def receipt_print_view(
        receipt_number: str, actor: Annotated[Actor, require_roles(*ANY_STAFF)]
    ) -> HTMLResponse:
        async with service.sessions() as session:
            row = await handlers.find_document(session, domain.RECEIPT, receipt_number)
        document = Document.from_json(row["content"])
        return HTMLResponse(
            print_view(document, f"{receipt_number}.pdf?download=true"),
            headers={"X-Document-Hash": document.document_hash},
        )

    @router.get("/credit-notes/{number}.pdf", response_class=Response)
    async def credit_note_pdf(
        number: str, actor: Annotated[Actor, require_roles(*ANY_STAFF)], download: Download = False
    ) -> Response:
        async with service.sessions() as session:
            return _pdf(await handlers.find_document(session, domain.CREDIT_NOTE, number), download)

    service.include(router)
    return service
