"""A kpi service that dies right after its first transaction commits, before Kafka hears of it.

Run as a separate process by test_exactly_once: `os._exit` is as abrupt as a kill -9 at that instant.
"""

from __future__ import annotations

import asyncio
import os

from services.kpi.app import create_service


def crash() -> None:
    os._exit(17)


async def main() -> None:
    service = create_service()
    for consumer in service.consumers:
        consumer.after_commit = crash
    await service.start()
    await asyncio.sleep(120)


if __name__ == "__main__":
    asyncio.run(main())
