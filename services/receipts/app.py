"""The receipts service: keeps receipts and credit notes in step with the events; serves them as PDF and print view."""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from aiokafka.errors import IllegalStateError

from services.receipts import api, domain, projections
from services.receipts.commands import Renderings, RenderWorker, lower_render_priority
from services.receipts.domain import DocumentStyle, Letterhead
from services.receipts.rendering import PdfRenderer
from services.receipts.settings import ReceiptsSettings
from services.receipts.storage import plumbing
from shared.contracts import Topic
from shared.messaging import EventConsumer
from shared.service import Service


def document_style(settings: ReceiptsSettings) -> DocumentStyle:
    style = DocumentStyle(
        Letterhead(settings.utility_name, settings.utility_address, settings.utility_contact),
        date_format=settings.date_format,
        timezone=settings.timezone,
    )
    style.day(domain.NOT_YET_POSTED)  # a bad zone or pattern fails at start-up, not on the first event
    return style


def render_pool(settings: ReceiptsSettings) -> ProcessPoolExecutor | None:
    """The render processes beside the service, at a lower CPU priority than it; None to render in a thread."""
    if not settings.render_processes:
        return None
    # Spawned, not forked: the service's threads and connections stay in the service.
    return ProcessPoolExecutor(
        max_workers=settings.render_processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=lower_render_priority,
        initargs=(settings.render_niceness, settings.render_idle_only),
    )


async def unapplied_events(consumers: Sequence[EventConsumer]) -> int:
    """Events on the consumers' partitions not yet taken by them, as of their last fetch answers (no request to the
    broker): what the render worker waits for. 0 for a consumer not started (an api-only process has none)."""
    behind = 0
    for consumer in consumers:
        kafka = getattr(consumer.subscriber, "consumer", None)
        if kafka is None:
            continue
        for partition in kafka.assignment():
            try:
                end = kafka.highwater(partition)  # None until the partition's first fetch answer
                if end is not None:
                    behind += max(end - await kafka.position(partition), 0)
            except (AssertionError, IllegalStateError):
                continue  # taken away by a rebalance meanwhile
    return behind


class ReceiptsService(Service):
    """A service with one more background task: the render worker, which turns stored documents into PDFs."""

    def __init__(self, settings: ReceiptsSettings) -> None:
        super().__init__(settings, plumbing, title="Paydesk receipts")
        self.renderer = PdfRenderer()
        self.renderings = Renderings(self.renderer)
        self.render_worker = RenderWorker(
            self.sessions,
            self.renderings,
            batch=settings.render_batch,
            idle_seconds=settings.render_idle_seconds,
            backlog=lambda: unapplied_events(self.event_consumers),
            yield_seconds=settings.render_yield_seconds,
        )

    async def start(self) -> None:
        await super().start()
        if isinstance(self.settings, ReceiptsSettings):
            self.renderings.processes = render_pool(self.settings)
        self.render_worker.start()

    async def stop(self) -> None:
        # Before the outbox drains, so the `receipt.rendered` of the last pass is published.
        await self.render_worker.stop()
        if self.renderings.processes is not None:
            self.renderings.processes.shutdown(wait=False, cancel_futures=True)
            self.renderings.processes = None
        await super().stop()


def create_service(settings: ReceiptsSettings | None = None) -> ReceiptsService:
    settings = settings or ReceiptsSettings()
    service = ReceiptsService(settings)
    service.subscribe(*projections.subscriptions(service.renderer, document_style(settings)))
    service.publishes(Topic.RECEIPTS_EVENTS, ["receipt.available", "receipt.rendered"])
    service.include(api.router(service, service.renderings))
    return service
