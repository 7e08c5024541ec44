"""A kpi service that dies right after its first transaction commits, before Kafka hears of it.

Run as a separate process by test_exactly_once: `os._exit` is as abrupt as a kill -9 at that instant.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from services.kpi.app import create_service
from shared.contracts import Envelope

# The test's own event; anything else still in the topics (other tests' events) is applied normally first.
TARGET_ACCOUNT = "ACC-CRASH"


async def main() -> None:
    service = create_service()
    applied_target = False
    for consumer in service.event_consumers:
        original = consumer.handlers.get("payment.posted")
        if original is None:
            continue

        async def noting_target(session: Any, envelope: Envelope, original: Any = original) -> None:
            nonlocal applied_target
            await original(session, envelope)
            applied_target = applied_target or envelope.subject == TARGET_ACCOUNT

        consumer.handlers["payment.posted"] = noting_target
        consumer.after_commit = lambda: os._exit(17) if applied_target else None
    await service.start()
    await asyncio.sleep(120)


if __name__ == "__main__":
    asyncio.run(main())
