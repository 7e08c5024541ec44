"""The outbox relay alone: staged `payment.posted` rows published to Apache Kafka per second, and what each costs
(a benchmark, never a test; prints figures).

Starts an embedded Postgres and Apache Kafka, migrates the payments schema, stages `--rows` events the size of a
lockbox's `payment.posted` in payments' outbox, and lets payments' own relay publish them (`publish_pending` on its
leader connection until none is left), once for each producer batch size in `--batch-bytes` (fresh rows each
time, back to back, interleaved `--repeat` times). It prints rows per second (which follow the machine's load) and
its CPU per row, which does not move with the load as much.

    .venv/bin/python bench/outbox_relay.py [--rows 10000] [--batch-bytes 16384,524288] [--relay-batch 2000]
        [--repeat 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaProducer  # noqa: E402

from paydesk.embedded import EmbeddedKafka, EmbeddedPostgres, free_port  # noqa: E402
from paydesk.migrations import upgrade  # noqa: E402
from services.receipts.samples import sample_payment  # noqa: E402
from shared.contracts import Topic, new_envelope  # noqa: E402
from shared.kafka_clients import provision_topics  # noqa: E402
from shared.outbox import Outgoing, stage_all  # noqa: E402


async def measure(bootstrap: str, rows: int, batch_bytes: int, relay_batch: int, run: int) -> None:
    from services.payments.app import create_service

    service = create_service()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=1, max_batch_size=batch_bytes
    )
    await producer.start()
    service.relay.producer = producer
    service.relay.batch_size = relay_batch
    try:
        events = []
        for n in range(rows):
            posted = sample_payment(receipt_number=f"R-{run}-{n:07d}", payment_id=f"PAY-{run}-{n:07d}")
            envelope = new_envelope("payment.posted", source="payments", subject=f"WU-{n % 500:05d}", data=posted)
            events.append(Outgoing(Topic.PAYMENTS_EVENTS, envelope))
        async with service.sessions() as session, session.begin():
            for at in range(0, rows, 500):
                await stage_all(session, events[at : at + 500])
        size = len(events[0].envelope.to_bytes())
        async with service.engine.connect() as conn:
            await service.relay.check_incarnation()
            batches = 0
            started, cpu = time.perf_counter(), time.process_time()
            while await service.relay.publish_pending(conn):
                batches += 1
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        print(
            f"batch {batch_bytes:>7,} B  {rows:,} rows of {size:,} B in {wall:.2f} s: {rows / wall:8,.1f} rows/s; "
            f"relay cpu {1000 * cpu / rows:.3f} ms/row; relay batches of {relay_batch}",
            flush=True,
        )
    finally:
        await producer.stop()
        await service.engine.dispose()


def load() -> str:
    return f"load        {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} (uptime load average)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--batch-bytes", default="16384,524288", help="producer max_batch_size values to compare")
    parser.add_argument("--relay-batch", default="2000", help="relay batch sizes (rows per select) to compare")
    parser.add_argument("--repeat", type=int, default=1, help="run every combination this many times, interleaved")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="paydesk-bench-relay-") as workdir:
        postgres = EmbeddedPostgres(Path(workdir) / "pgdata", delete_on_stop=True)
        kafka = EmbeddedKafka(port=free_port(), data_dir=Path(workdir) / "kafka", log_file=Path(workdir) / "kafka.log")
        url = postgres.start()
        bootstrap = kafka.start()
        os.environ["DATABASE_URL"] = url
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
        os.environ["PAYDESK_OTEL_EXPORTER"] = "none"
        try:
            upgrade("payments", url)
            asyncio.run(provision_topics(bootstrap, partitions=6))
            configs = [(int(b), int(r)) for r in args.relay_batch.split(",") for b in args.batch_bytes.split(",")]
            for run, (batch_bytes, relay_batch) in enumerate(configs * args.repeat):
                print(load(), flush=True)
                asyncio.run(measure(bootstrap, args.rows, batch_bytes, relay_batch, run))
            print(load(), flush=True)
        finally:
            kafka.stop()
            postgres.stop()


if __name__ == "__main__":
    main()
