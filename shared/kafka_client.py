"""aiokafka's client as the services run it: consumers that tell when their offset commits stall, the health a
consumer reports from that, and client log lines that say a repeated failure once instead of ten times a second."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer


class ObservedConsumer(AIOKafkaConsumer):  # type: ignore[misc]  # aiokafka is untyped
    """aiokafka's consumer, telling when its offset commit started and last succeeded.

    aiokafka retries a commit for as long as the error is retriable, e.g. for ever on partitions a wiped broker no
    longer has, and FastStream's ack waits for it: from outside, a consumer stuck there looks idle."""

    commit_since: float | None = None
    committed_at: float | None = None

    async def commit(self, offsets: Any = None) -> None:
        self.commit_since = time.monotonic()
        try:
            await super().commit(offsets)
            self.committed_at = time.monotonic()
        finally:
            self.commit_since = None


class OncePerKind(logging.Filter):
    """Lets one record per (logger, message, exception kind) through per window: a client library retrying in a
    loop (aiokafka logs every failed commit or connection attempt, ten a second) says so once, not thousands of
    times. The next line that gets through says how many were held back."""

    def __init__(self, every: float = 30.0) -> None:
        super().__init__()
        self.every = every
        self.last: dict[tuple[str, str, str], float] = {}
        self.held: dict[tuple[str, str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        kind = type(record.exc_info[1]).__name__ if record.exc_info and record.exc_info[1] else ""
        key = (record.name, str(record.msg), kind)
        now = time.monotonic()
        if now - self.last.get(key, -self.every) < self.every:
            self.held[key] = self.held.get(key, 0) + 1
            return False
        self.last[key] = now
        record.suppressed_since_last = self.held.pop(key, 0)
        return True


# The loggers of the client code that loops on a broker that is gone or changed.
CLIENT_LOGGERS = (
    "aiokafka",
    "aiokafka.client",
    "aiokafka.cluster",
    "aiokafka.conn",
    "aiokafka.consumer.consumer",
    "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator",
    "aiokafka.producer.producer",
    "aiokafka.producer.sender",
)


def quiet_repeated_client_errors(*extra_loggers: str) -> None:
    """Install `OncePerKind` on the Kafka client's loggers (once per logger)."""
    for name in (*CLIENT_LOGGERS, *extra_loggers):
        logger = logging.getLogger(name)
        if not any(isinstance(f, OncePerKind) for f in logger.filters):
            logger.addFilter(OncePerKind())


@dataclass(frozen=True, slots=True)
class ConsumerHealth:
    """One consumer group's progress as its service sees it."""

    consumer: str
    seconds_since_progress: float
    #: Why it cannot make progress; None while it does.
    stalled: str | None
