"""CPU that services' event consumers burn while no event comes (a benchmark, never a test; prints figures).

Starts an embedded Postgres and Apache Kafka, creates the topics, migrates and starts the `--services` in this
one process (their consumer groups joined, their relays running, no HTTP), waits until every consumer holds its
partitions, then measures this process's CPU over `--seconds` with nothing published. Every consumer of a quiet
topic (most of them, most of the time) costs this much all day long, on a machine where every process competes
for CPU.

    .venv/bin/python bench/idle_consumers.py [--services kpi,collections,payouts,reconciliation] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paydesk.embedded import EmbeddedKafka, EmbeddedPostgres, free_port  # noqa: E402
from paydesk.migrations import upgrade  # noqa: E402
from shared.messaging import provision_topics  # noqa: E402


async def measure(names: list[str], seconds: float, partitions: int) -> None:
    services: list[Any] = []
    for name in names:
        module = __import__(f"services.{name}.app", fromlist=["create_service"])
        services.append(module.create_service())
    for service in services:
        await service.start()
    try:
        consumers = [c for s in services for c in s.event_consumers]
        started = time.monotonic()

        def assigned(consumer: Any) -> bool:
            client = getattr(consumer.subscriber, "consumer", None)
            return bool(client and client.assignment())

        while not all(assigned(c) for c in consumers):
            if time.monotonic() - started > 300:
                raise SystemExit("consumers did not get their partitions in 300 s")
            await asyncio.sleep(0.5)
        await asyncio.sleep(3)  # let the joins' own traffic settle
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        wait = services[0].settings.consumer_batch_wait_ms
        print(
            f"{len(consumers)} idle consumers ({', '.join(names)}; {partitions} partitions each; "
            f"batch wait {wait} ms): "
            f"{cpu / wall * 100:.1f}% of a core over {wall:.0f} s, {cpu / wall / len(consumers) * 1e3:.1f} ms CPU per "
            "consumer per second",
            flush=True,
        )
    finally:
        for service in reversed(services):
            await service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", default="kpi,collections,payouts,reconciliation")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    names = args.services.split(",")
    with tempfile.TemporaryDirectory(prefix="paydesk-bench-idle-") as workdir:
        postgres = EmbeddedPostgres(Path(workdir) / "pgdata", delete_on_stop=True)
        url = postgres.start()
        kafka = EmbeddedKafka(port=free_port(), log_file=Path(workdir) / "kafka.log", data_dir=Path(workdir) / "kafka")
        bootstrap = kafka.start()
        os.environ.update(
            {
                "DATABASE_URL": url,
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "PAYDESK_OTEL_EXPORTER": "none",
                "PAYDESK_DEVELOPMENT": "true",
            }
        )
        try:
            asyncio.run(provision_topics(bootstrap, partitions=args.partitions))
            for name in names:
                upgrade(name, url)
            load = os.getloadavg()
            print(f"load {load[0]:.1f} {load[1]:.1f} (uptime)", flush=True)
            asyncio.run(measure(names, args.seconds, args.partitions))
            load = os.getloadavg()
            print(f"load {load[0]:.1f} {load[1]:.1f} (uptime)", flush=True)
        finally:
            kafka.stop()
            postgres.stop()


if __name__ == "__main__":
    main()
