"""The receipts service: consumes payment events; document routes arrive with the rendering."""

from __future__ import annotations

from services.receipts import handlers
from services.receipts.settings import ReceiptsSettings
from services.receipts.storage import plumbing
from shared.contracts import Topic
from shared.service import Service


def create_service(settings: ReceiptsSettings | None = None) -> Service:
    settings = settings or ReceiptsSettings()
    service = Service(settings, plumbing, title="Paydesk receipts")
    service.consume("payments", Topic.PAYMENTS_EVENTS, handlers.PAYMENT_HANDLERS)
    return service
