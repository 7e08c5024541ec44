"""Receipts' state changes off the event path: turning stored documents into PDF files.

The event consumers store what a document says and announce it (`projections.py`, `receipt.available`); the
render worker here renders those documents in batches, in a worker thread, and stores each file with its SHA-256
in one transaction that stages `receipt.rendered`. Rendering took most of the consumers' time when it was done
eagerly in their transaction; now a burst of payments is stored at the pace of the database and rendered behind.
The worker renders in a separate process (`RECEIPTS_RENDER_PROCESSES`, 1): Typst is CPU work, and in a thread
of the service it would share the interpreter with the event consumers; in its own process it uses the other core,
at a lower CPU priority (`RECEIPTS_RENDER_NICENESS`, 10), so it never takes a core from the event path; and
while the event consumers are behind it does not render at all, for a bounded time (`RECEIPTS_RENDER_YIELD_SECONDS`).

Several workers (several receipts processes) never wait on each other nor on the consumers: the rows a worker
updates are taken with FOR UPDATE SKIP LOCKED, and a document whose content changed while it was being rendered
(another hash) is left for the next pass, so a file never says something its row no longer does. Content that
changes several times before its turn is rendered once, at its latest revision.

A GET of a document not rendered yet renders it on demand (`Renderings.with_pdf`); the bytes are cached by
content hash, so the worker then reuses them instead of rendering twice. The same content gives the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import LargeBinary, Row, String, bindparam, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.receipts.domain import Document
from services.receipts.rendering import PdfRenderer
from services.receipts.storage import documents
from shared.contracts import Topic, new_envelope
from shared.contracts.events import ReceiptRendered
from shared.outbox import Outgoing, stage_all

log = logging.getLogger(__name__)

SOURCE = "receipts"


_CHILD_RENDERER: PdfRenderer | None = None

# A pass's files, stored in one UPDATE from arrays (unnest zips them row by row).
_RENDERED = select(
    func.unnest(bindparam("kinds", type_=ARRAY(String))).label("kind"),
    func.unnest(bindparam("numbers", type_=ARRAY(String))).label("number"),
    func.unnest(bindparam("pdfs", type_=ARRAY(LargeBinary))).label("pdf"),
    func.unnest(bindparam("sha256s", type_=ARRAY(String))).label("sha256"),
).subquery("rendered")
_STORE_FILES = (
    update(documents)
    .where(documents.c.kind == _RENDERED.c.kind, documents.c.number == _RENDERED.c.number)
    .values(pdf=_RENDERED.c.pdf, sha256=_RENDERED.c.sha256, rendered_at=bindparam("at"))
)


def lower_render_priority(niceness: int, idle_only: bool = False) -> None:
    """Run in each render process as it starts: rendering is background work (a GET renders on demand meanwhile),
    so it takes the CPU the consumers, relays, Postgres and the broker leave. A lockbox file of thousands of payments
    otherwise had the render process compete with the path that makes them posted and available, at tens of ms of
    CPU per PDF against about a millisecond per event on that path.

    With `idle_only` the process also joins Linux's idle scheduling class (SCHED_IDLE): it runs only on a core
    nothing else wants, and a woken consumer preempts it at once, where a niced process still holds a share
    (about a tenth at nice 10) and the rest of its time slice. Where the class does not exist, niceness alone."""
    os.nice(niceness)
    if idle_only and hasattr(os, "SCHED_IDLE"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def render_contents(contents: list[dict[str, Any]]) -> list[bytes]:
    """Render stored document contents to PDF, in a render process (one Typst compiler per process)."""
    global _CHILD_RENDERER
    if _CHILD_RENDERER is None:
        _CHILD_RENDERER = PdfRenderer()
    return [_CHILD_RENDERER.pdf(Document.from_json(content)) for content in contents]


class Renderings:
    """Renders documents to PDF, keeping the latest files by content hash (equal content gives equal bytes).

    Batches go to `processes` (an executor of render processes) when there is one, else to a worker thread."""

    def __init__(self, renderer: PdfRenderer, *, cache_size: int = 256, processes: Executor | None = None) -> None:
        self.renderer = renderer
        self.cache_size = cache_size
        self.processes = processes
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def _cached(self, document_hash: str) -> bytes | None:
        with self._lock:
            return self._cache.get(document_hash)

    def _keep(self, document_hash: str, pdf: bytes) -> None:
        with self._lock:
            self._cache[document_hash] = pdf
            self._cache.move_to_end(document_hash)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def render(self, document: Document) -> bytes:
        """The document's PDF, from the cache or rendered now (blocking: call it from a worker thread)."""
        pdf = self._cached(document.document_hash)
        if pdf is None:
            pdf = self.renderer.pdf(document)
            self._keep(document.document_hash, pdf)
        return pdf

    def render_all(self, batch: list[Document]) -> list[bytes]:
        return [self.render(document) for document in batch]

    async def render_batch(self, batch: list[Document]) -> list[bytes]:
        """Every document's PDF: cached ones as they are, the others rendered in one hop to a render process."""
        if self.processes is None:
            return await asyncio.to_thread(self.render_all, batch)
        files = {d.document_hash: pdf for d in batch if (pdf := self._cached(d.document_hash)) is not None}
        missing = [d for d in batch if d.document_hash not in files]
        if missing:
            loop = asyncio.get_running_loop()
            pdfs = await loop.run_in_executor(self.processes, render_contents, [d.to_json() for d in missing])
            for document, pdf in zip(missing, pdfs, strict=True):
                files[document.document_hash] = pdf
                self._keep(document.document_hash, pdf)
        return [files[d.document_hash] for d in batch]

    async def with_pdf(self, row: dict[str, Any]) -> dict[str, Any]:
        """A stored document row with its PDF: the stored file, or rendered now if the worker has not yet."""
        if row["pdf"] is not None:
            return row
        pdf = await asyncio.to_thread(self.render, Document.from_json(row["content"]))
        return {**row, "pdf": pdf, "sha256": hashlib.sha256(pdf).hexdigest()}


def _rendered(row: Row[Any, Any, Any, Any], document: Document, sha256: str, rendered_at: datetime) -> Outgoing:
    """The `receipt.rendered` of a stored file, keyed by its account."""
    rendered = ReceiptRendered(
        document=row.kind,
        number=row.number,
        account_number=row.account_number,
        sha256=sha256,
        rendered_at=rendered_at,
        revision=row.revision,
        document_hash=document.document_hash,
        status=document.status,
    )
    envelope = new_envelope("receipt.rendered", source=SOURCE, subject=row.account_number, data=rendered)
    return Outgoing(Topic.RECEIPTS_EVENTS, envelope)


async def render_pending(sessions: async_sessionmaker[AsyncSession], renderings: Renderings, *, batch: int) -> int:
    """Render up to `batch` documents still waiting for their PDF and store them; returns how many were stored."""
    async with sessions() as session:
        waiting = (
            await session.execute(
                select(documents.c.kind, documents.c.number, documents.c.document_hash, documents.c.content)
                .where(documents.c.pdf.is_(None))
                .order_by(documents.c.kind, documents.c.number)
                .limit(batch)
            )
        ).all()
    if not waiting:
        return 0
    contents = [Document.from_json(row.content) for row in waiting]
    # The whole batch in one hop to a render process (or thread): the event loop keeps consuming meanwhile.
    pdfs = await renderings.render_batch(contents)
    files = dict(zip((d.document_hash for d in contents), pdfs, strict=True))
    by_key = {(d.kind, d.number): d for d in contents}
    rendered_at = datetime.now(UTC)
    async with sessions() as session, session.begin():
        # Only rows nobody holds and that still say what was rendered; the rest wait for the next pass.
        mine = (
            await session.execute(
                select(documents.c.kind, documents.c.number, documents.c.revision, documents.c.account_number)
                .where(
                    tuple_(documents.c.kind, documents.c.number, documents.c.document_hash).in_(
                        [(row.kind, row.number, row.document_hash) for row in waiting]
                    ),
                    documents.c.pdf.is_(None),
                )
                .order_by(documents.c.kind, documents.c.number)
                .with_for_update(skip_locked=True)
            )
        ).all()
        if not mine:
            return 0
        stored = [(row, by_key[(row.kind, row.number)]) for row in mine]
        sha256s = [hashlib.sha256(files[document.document_hash]).hexdigest() for _, document in stored]
        # The pass's files in one statement and its announcements in one insert, where a statement and a stage
        # per document took two round trips each.
        await session.execute(
            _STORE_FILES,
            {
                "kinds": [row.kind for row in mine],
                "numbers": [row.number for row in mine],
                "pdfs": [files[document.document_hash] for _, document in stored],
                "sha256s": sha256s,
                "at": rendered_at,
            },
        )
        await stage_all(
            session,
            [
                _rendered(row, document, sha256, rendered_at)
                for (row, document), sha256 in zip(stored, sha256s, strict=True)
            ],
        )
    return len(mine)


# How many events the event consumers have still to apply: the render worker waits while there are any.
Backlog = Callable[[], Awaitable[int]]


class RenderWorker:
    """Renders waiting documents while the service runs: batch after batch, then a short rest when none wait.

    With a `backlog`, each pass first waits while the event consumers are behind, for at most `yield_seconds`: a
    burst of posted payments is then applied (and its receipts available) first and rendered right after, rather
    than the render competing with it for the CPU; past the bound it renders anyway, so rendering never starves."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        renderings: Renderings,
        *,
        batch: int,
        idle_seconds: float,
        backlog: Backlog | None = None,
        yield_seconds: float = 0.0,
        check_seconds: float = 0.05,
    ) -> None:
        self.sessions = sessions
        self.renderings = renderings
        self.batch = batch
        self.idle_seconds = idle_seconds
        self.backlog = backlog
        self.yield_seconds = yield_seconds
        self.check_seconds = check_seconds
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> int:
        """One pass; returns how many documents were rendered and stored."""
        return await render_pending(self.sessions, self.renderings, batch=self.batch)

    async def yield_to_consumers(self) -> None:
        """Wait while the event consumers have events to apply, at most `yield_seconds`."""
        if self.backlog is None or self.yield_seconds <= 0:
            return
        deadline = time.monotonic() + self.yield_seconds
        while await self.backlog() > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return  # behind for that long: render anyway
            await asyncio.sleep(min(self.check_seconds, left))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="receipts-render-worker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.yield_to_consumers()
                stored = await self.run_once()
            except Exception:
                # Nothing was half-done (each pass stores in one transaction); the next pass tries again.
                log.exception("rendering waiting documents failed")
                stored = 0
            if stored < self.batch:
                await asyncio.sleep(self.idle_seconds)
