"""A broker paused (SIGSTOP) for longer than the consumers' session timeout, then resumed (SIGCONT): the group
expires and rejoins, commits hang and fail, and still every event is applied exactly once."""

from __future__ import annotations

import asyncio
import signal
from decimal import Decimal

import pytest

from paydesk.embedded import EmbeddedKafka
from services.kpi.app import create_service as create_kpi
from services.kpi.settings import KpiSettings
from shared.contracts import Topic
from shared.messaging import provision_topics
from tests.conftest import PARTITIONS, Infra
from tests.integration.test_broker_wiped_second_instance import _day_totals
from tests.support.brokers import IDEMPOTENT_PRODUCER, new_broker
from tests.support.helpers import equals, eventually, payment_posted, publish, running, settled, unique_day

pytestmark = pytest.mark.kafka
SESSION_TIMEOUT_MS = 6000


async def test_a_broker_paused_past_the_session_timeout_loses_and_doubles_nothing(infra: Infra) -> None:
    """INVARIANT: a frozen broker (a long GC pause, a stopped VM) loses no event and counts none twice."""
    broker = new_broker(infra.workdir, "paused")
    if not isinstance(broker, EmbeddedKafka):
        pytest.skip("the pause is sent to Apache Kafka's JVM")
    bootstrap = await asyncio.to_thread(broker.start)
    await provision_topics(bootstrap, partitions=PARTITIONS)
    settings = KpiSettings(
        database_url=infra.database_url,
        kafka_bootstrap_servers=bootstrap,
        kafka_idempotent_producer=IDEMPOTENT_PRODUCER,
        kafka_session_timeout_ms=SESSION_TIMEOUT_MS,
        development=True,
    )
    day = unique_day()
    first = [payment_posted(f"ACC-P{n % 5}", "10.00", day, number=n) for n in range(40)]
    then = [payment_posted(f"ACC-P{n % 5}", "1.00", day, number=100 + n) for n in range(20)]
    process = broker._process
    assert process is not None
    try:
        async with running(create_kpi(settings)) as kpi:
            await publish(bootstrap, Topic.PAYMENTS_EVENTS, first)
            process.send_signal(signal.SIGSTOP)  # whatever the consumer was applying or committing hangs
            try:
                # Longer than the session timeout: the broker will find the member expired when it wakes.
                # Not a synchronisation: nothing is waited for, the broker simply stays frozen this long.
                await asyncio.sleep(SESSION_TIMEOUT_MS / 1000 * 2)
            finally:
                process.send_signal(signal.SIGCONT)
            await publish(bootstrap, Topic.PAYMENTS_EVENTS, [*then, *first[:10]])  # and 10 sent again

            await eventually(lambda: equals(_day_totals(kpi, day), (60, Decimal("420.00"))), within=240)
            await settled(kpi)
            assert await _day_totals(kpi, day) == (60, Decimal("420.00"))
    finally:
        with_cont = broker._process
        if with_cont is not None and with_cont.poll() is None:
            with_cont.send_signal(signal.SIGCONT)
        await asyncio.to_thread(broker.stop)
