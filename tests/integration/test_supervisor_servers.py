"""`paydesk run` starts the broker itself and watches it (`Supervisor.watch`): a broker that dies is started
again with backoff and a log line, on its data and at the same address, with a real Apache Kafka here."""

from __future__ import annotations

import asyncio

import pytest

from paydesk.embedded import EmbeddedKafka
from paydesk.supervisor import Backoff, Supervisor
from shared.contracts import Topic, new_envelope
from shared.contracts.events import AccountUpserted
from shared.messaging import provision_topics
from tests.conftest import PARTITIONS, Infra
from tests.support.brokers import new_broker
from tests.support.helpers import eventually, publish, read_topic, unique_account

pytestmark = pytest.mark.kafka


def _supervisor(lines: list[str]) -> Supervisor:
    return Supervisor(say=lines.append, backoff=Backoff(initial=0.5))


async def _restarted(supervisor: Supervisor, name: str, lines: list[str]) -> bool:
    await asyncio.to_thread(supervisor.check)  # a restart blocks until the server answers: off the loop
    return f"{name} is running again" in lines


async def test_a_killed_broker_is_started_again_on_its_data_with_a_line_for_each_step(infra: Infra) -> None:
    broker = new_broker(infra.workdir, "watched")
    if not isinstance(broker, EmbeddedKafka):
        pytest.skip("Tansu keeps memory only: what it held is gone after any restart")
    bootstrap = await asyncio.to_thread(broker.start)
    cluster = broker.cluster_id
    lines: list[str] = []
    supervisor = _supervisor(lines)
    supervisor.watch("kafka", alive=broker.alive, restart=broker.start)
    try:
        await provision_topics(bootstrap, partitions=PARTITIONS)
        account = unique_account()
        data = AccountUpserted(account_number=account, name="Watched Wanda", service_address="3 Restart Row")
        envelope = new_envelope("account.upserted", source="billing", subject=account, data=data)
        await publish(bootstrap, Topic.BILLING_RECEIVABLES, [envelope])

        broker.kill()
        await eventually(lambda: _restarted(supervisor, "kafka", lines), within=300)
        assert lines[0] == "kafka is not running; restarting in 0.5s (failure 1 in a row)", lines
        assert "starting kafka again" in lines
        assert broker.alive() and broker.cluster_id == cluster, "started on its data: the same cluster"
        records = await read_topic(bootstrap, Topic.BILLING_RECEIVABLES)
        assert any(account.encode() in r.value for r in records), "what it acknowledged before the kill is there"
    finally:
        await asyncio.to_thread(broker.stop)
