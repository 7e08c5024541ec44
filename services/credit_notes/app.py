"""The credit_notes service. Its business capability is not built yet; it starts, migrates and reports health."""

from __future__ import annotations

from services.credit_notes.settings import CreditNotesSettings
from services.credit_notes.storage import plumbing
from shared.service import Service


def create_service(settings: CreditNotesSettings | None = None) -> Service:
    settings = settings or CreditNotesSettings()
    return Service(settings, plumbing, title="Paydesk credit_notes")
