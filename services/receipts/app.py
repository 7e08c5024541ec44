"""The receipts service: keeps receipts and credit notes in step with the events; serves them as PDF and print view."""

from __future__ import annotations

from services.receipts import api, domain, projections
from services.receipts.domain import DocumentStyle, Letterhead
from services.receipts.rendering import PdfRenderer
from services.receipts.settings import ReceiptsSettings
from services.receipts.storage import plumbing
from shared.contracts import Topic
from shared.service import Service


def document_style(settings: ReceiptsSettings) -> DocumentStyle:
    style = DocumentStyle(
        Letterhead(settings.utility_name, settings.utility_address, settings.utility_contact),
        date_format=settings.date_format,
        timezone=settings.timezone,
    )
    style.day(domain.NOT_YET_POSTED)  # a bad zone or pattern fails at start-up, not on the first event
    return style


def create_service(settings: ReceiptsSettings | None = None) -> Service:
    settings = settings or ReceiptsSettings()
    service = Service(settings, plumbing, title="Paydesk receipts")
    service.subscribe(*projections.subscriptions(PdfRenderer(), document_style(settings)))
    service.publishes(Topic.RECEIPTS_EVENTS, ["receipt.rendered"])
    service.include(api.router(service))
    return service
