"""The credit_notes service: issues credit notes (automatically on overpayment, or by staff), applies them to
open items, expires them on schedule, and serves the credit-notes tab, detail view and export."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from services.credit_notes import api, domain, projections
from services.credit_notes.expiry import ExpirySchedule, run_expiry_pass
from services.credit_notes.settings import CreditNotesSettings
from services.credit_notes.storage import plumbing
from shared.contracts import Topic
from shared.service import Service


class CreditNotesService(Service):
    """A service with one more background task: the scheduled expiry of credit notes."""

    def __init__(self, settings: CreditNotesSettings) -> None:
        super().__init__(settings, plumbing, title="Paydesk credit_notes")
        self.number_format = domain.NumberFormat(
            prefix=settings.number_prefix, padding=settings.number_padding, start=settings.number_start
        )
        self.zone = ZoneInfo(settings.timezone)
        self.expiry = ExpirySchedule(self.sessions, every_seconds=settings.expiry_check_seconds)

    async def start(self) -> None:
        await super().start()
        self.expiry.start()

    async def stop(self) -> None:
        # Before the outbox drains, so what the last pass staged is published.
        await self.expiry.stop()
        await super().stop()

    async def expire_now(self, now: datetime | None = None) -> int:
        """One expiry pass; returns how many credit notes expired."""
        return await self.expiry.run_once(now)


def create_service(settings: CreditNotesSettings | None = None) -> CreditNotesService:
    settings = settings or CreditNotesSettings()
    service = CreditNotesService(settings)
    service.subscribe(*projections.subscriptions(service.number_format))
    service.publishes(
        Topic.CREDITNOTES_EVENTS,
        [
            "credit_note.issued",
            "credit_note.applied",
            "credit_note.expired",
            "credit_note.voided",
            "credit_note.refund_requested",
            "approval.requested",
            "approval.decided",
        ],
    )
    service.include(api.router(service.sessions, number_format=service.number_format, zone=service.zone))
    return service


async def expire_once() -> int:
    """One expiry pass against the configured database (the `paydesk expire-credit-notes` command)."""
    service = create_service()
    try:
        return await run_expiry_pass(service.sessions)
    finally:
        await service.engine.dispose()
