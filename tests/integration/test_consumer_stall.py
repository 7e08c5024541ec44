"""A consumer that cannot make progress says so: readiness turns false and a gauge shows it, then both recover."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from services.kpi.app import create_service as create_kpi
from services.kpi.settings import KpiSettings
from shared.messaging import provision_topics
from tests.conftest import PARTITIONS, Infra
from tests.support.brokers import new_broker
from tests.support.helpers import eventually, running

pytestmark = pytest.mark.kafka


def _gauges(metrics: str, name: str, service: str) -> dict[str, float]:
    """The value of gauge `name` for each consumer of `service`, from the Prometheus text."""
    pattern = re.compile(rf'^{name}\{{consumer="([^"]+)",service="{service}"\}} (\S+)$', re.MULTILINE)
    return {consumer: float(value) for consumer, value in pattern.findall(metrics)}


async def test_a_consumer_cut_off_from_the_broker_is_reported_stalled_until_the_broker_is_back(infra: Infra) -> None:
    broker = new_broker(infra.workdir, "stall")
    bootstrap = await asyncio.to_thread(broker.start)
    await provision_topics(bootstrap, partitions=PARTITIONS)
    kpi = create_kpi(
        KpiSettings(
            database_url=infra.database_url,
            kafka_bootstrap_servers=bootstrap,
            development=True,
            consumer_stall_seconds=10,
        )
    )
    consumers = {consumer.name for consumer in kpi.event_consumers}
    try:
        async with running(kpi):
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=kpi.http), base_url="http://kpi")
            async with client:

                async def ready() -> httpx.Response:
                    return await client.get("/health/ready")

                async def stalled() -> dict[str, float]:
                    return _gauges((await client.get("/metrics")).text, "paydesk_consumer_stalled", "kpi")

                async def reports(status: int, stall: float) -> bool:
                    response, gauges = await ready(), await stalled()
                    return response.status_code == status and gauges == dict.fromkeys(consumers, stall)

                await eventually(lambda: reports(200, 0.0), within=180)
                assert (await ready()).json()["checks"]["consumers"] == "ok"

                broker.kill()
                await eventually(lambda: reports(503, 1.0), within=180)
                checks = (await ready()).json()["checks"]
                assert checks["consumers"].startswith("stalled: "), checks
                for consumer in kpi.event_consumers:
                    assert consumer.group_id in checks["consumers"]
                silence = _gauges((await client.get("/metrics")).text, "paydesk_consumer_seconds_since_progress", "kpi")
                # The gauge is rounded to 0.1 s: a stall found at 10.04 s of silence reads 10.0.
                assert all(seconds >= 10 for seconds in silence.values()), silence

                await asyncio.to_thread(broker.start)
                await eventually(lambda: reports(200, 0.0), within=180)
                assert (await ready()).json()["checks"]["consumers"] == "ok"
    finally:
        await asyncio.to_thread(broker.stop)
