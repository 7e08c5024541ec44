"""Consumer lag as Prometheus gauges on kpi's `/metrics`: per consumer group and partition, the committed
offset, the end offset and the lag (what `paydesk lag` prints).

Read when `/metrics` is scraped, at most once per `min_interval` seconds (a scrape in between gets the last
figures), so nothing runs in the background and nothing is read that nobody looks at. If the broker does not
answer in time, the last figures stay and `paydesk_consumer_lag_errors_total` counts the failure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from prometheus_client import Counter, Gauge
from starlette.requests import Request
from starlette.responses import Response

from shared.consumer_lag import PartitionLag, consumer_lag
from shared.service import Service

log = logging.getLogger(__name__)

LABELS = ["group", "topic", "partition"]
COMMITTED = Gauge(
    "paydesk_consumer_committed_offset", "Offset the consumer group committed (the next it reads; -1: none yet)", LABELS
)
END = Gauge("paydesk_consumer_end_offset", "Offset the partition's next record will get", LABELS)
LAG = Gauge("paydesk_consumer_lag", "Records in the partition the consumer group has not consumed yet", LABELS)
ERRORS = Counter("paydesk_consumer_lag_errors_total", "Consumer lag reads that failed or timed out")


class LagGauges:
    def __init__(self, bootstrap_servers: str, *, min_interval: float = 5.0, timeout: float = 5.0) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.min_interval = min_interval
        self.timeout = timeout
        self._read_at = float("-inf")
        self._shown: set[tuple[str, str, str]] = set()
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._read_at < self.min_interval:
                return
            try:
                rows = await asyncio.wait_for(consumer_lag(self.bootstrap_servers), self.timeout)
            except Exception as exc:  # the figures are a view for operators; never fail the scrape for them
                ERRORS.inc()
                log.warning("consumer lag not read", extra={"reason": repr(exc)[:300]})
                return
            self._read_at = time.monotonic()
            self.show(rows)

    def show(self, rows: list[PartitionLag]) -> None:
        seen = set()
        for row in rows:
            labels = (row.group, row.topic, str(row.partition))
            seen.add(labels)
            COMMITTED.labels(*labels).set(-1 if row.committed is None else row.committed)
            END.labels(*labels).set(row.end)
            LAG.labels(*labels).set(row.lag)
        for labels in self._shown - seen:  # a group or topic that went away
            for gauge in (COMMITTED, END, LAG):
                gauge.remove(*labels)
        self._shown = seen


def expose(service: Service) -> LagGauges:
    """Refresh the lag gauges whenever the service's `/metrics` is read."""
    gauges = LagGauges(service.settings.kafka_bootstrap_servers)

    @service.http.middleware("http")
    async def refresh_lag(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.url.path == "/metrics":
            await gauges.refresh()
        return await call_next(request)

    return gauges
