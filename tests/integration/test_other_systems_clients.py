"""Other enterprise systems use other Kafka clients: librdkafka (here `confluent-kafka`) configured the usual way
(an idempotent producer, acks=all, a consumer group committing its offsets) and the CloudEvents SDK. Apache Kafka
takes them; Tansu refuses an idempotent producer, so on Tansu these tests are skipped."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from cloudevents.core.bindings import kafka as cloudevents_kafka
from cloudevents.core.v1.event import CloudEvent
from confluent_kafka import Consumer, KafkaError, Producer

from shared.contracts import Topic
from shared.contracts.events import PaymentRecordRequested, PaymentType
from tests.conftest import Infra
from tests.support.brokers import IDEMPOTENT_PRODUCER
from tests.support.payments import Api, payments_api, seeded, year_of

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(not IDEMPOTENT_PRODUCER, reason="Tansu refuses idempotent producers (InitProducerId)"),
]


@pytest.fixture(scope="module")
async def api(infra: Infra) -> AsyncIterator[Api]:
    async for running_api in payments_api(infra):
        yield running_api


def _produce(bootstrap: str, topic: str, key: bytes, value: bytes, headers: dict[str, bytes]) -> None:
    """What an ERP would do: librdkafka's idempotent producer, acks=all, flushed until delivered."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "client.id": "erp-lockbox",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
        }
    )
    delivered: list[Any] = []
    producer.produce(
        topic, value=value, key=key, headers=list(headers.items()), on_delivery=lambda error, _: delivered.append(error)
    )
    assert producer.flush(60) == 0, "librdkafka did not deliver within 60 s"
    assert delivered == [None], f"delivery failed: {delivered}"


def _consume_until(bootstrap: str, group: str, topic: str, wanted: Any, *, within: float = 60.0) -> list[Any]:
    """A librdkafka consumer in its own group reads `topic` from the start until `wanted(record)`; commits."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen: list[Any] = []
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(f"librdkafka consumer error: {error}")
            seen.append(message)
            if wanted(message):
                consumer.commit(asynchronous=False)
                return seen
        raise AssertionError(f"no wanted record on {topic} within {within}s; read {len(seen)}")
    finally:
        consumer.close()


async def test_a_librdkafka_producer_posts_a_command_and_a_librdkafka_group_reads_the_cloudevents(api: Api) -> None:
    account, _ = await seeded(api)
    command_id = str(uuid.uuid4())
    data = PaymentRecordRequested(
        account_number=account,
        payment_type=PaymentType.BILL,
        item_reference=f"INV-{account}-1",
        method="Bank Transfer",
        amount=Decimal("145.50"),
        payment_date=datetime(year_of(account), 4, 18, tzinfo=UTC).date(),
    )
    # Binary content mode, as the CloudEvents SDK writes it for Kafka by default: attributes in ce_* headers.
    command = CloudEvent(
        {
            "id": command_id,
            "type": "payment.record_requested",
            "source": "erp-lockbox",
            "subject": account,
            "time": datetime.now(UTC),
            "datacontenttype": "application/json",
            "partitionkey": account,
        },
        data.model_dump(mode="json"),
    )
    message = cloudevents_kafka.to_binary_event(command)
    key = message.key.encode() if isinstance(message.key, str) else message.key
    assert key is not None
    await asyncio.to_thread(_produce, api.bootstrap, Topic.PAYMENTS_COMMANDS, key, message.value, message.headers)

    def posted_for_the_command(record: Any) -> bool:
        if record.key() != account.encode():
            return False  # the run's topic also holds other tests' records, some malformed on purpose
        event = _cloudevent(record)
        payload = event.get_data()
        return (
            event.get_type() == "payment.posted"
            and event.get_subject() == account
            and isinstance(payload, dict)
            and payload.get("received_by") == "erp-lockbox"
        )

    group = f"erp-ledger-{uuid.uuid4().hex[:8]}"
    records = await asyncio.to_thread(
        _consume_until, api.bootstrap, group, Topic.PAYMENTS_EVENTS, posted_for_the_command
    )

    posted = _cloudevent(records[-1])
    assert posted.get_specversion() == "1.0"
    assert posted.get_source() == "payments"
    assert posted.get_datacontenttype() == "application/json"
    assert posted.get_time() is not None
    payload = posted.get_data()
    assert isinstance(payload, dict)
    assert payload["amount"] == {"amount": "145.50", "currency": "USD"}
    assert payload["consumer"]["account_number"] == account
    ours = [record for record in records if record.key() == account.encode()]
    for record in ours:
        _cloudevent(record)  # every event payments published for this account is a valid CloudEvent


def _cloudevent(record: Any) -> Any:
    """Parse a librdkafka record with the CloudEvents SDK (either content mode); raises if it is not valid."""
    headers = {name: value for name, value in (record.headers() or [])}
    message = cloudevents_kafka.KafkaMessage(headers=headers, key=record.key(), value=record.value())
    return cloudevents_kafka.from_kafka_event(message)
