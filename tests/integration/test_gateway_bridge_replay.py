"""Replay: 10,000 signed Stripe deliveries, 30% duplicates, in random order, through the real HTTP endpoint.

The bridge runs in-process on the real database and broker and is served by uvicorn on loopback; the
deliveries are sent concurrently with aiohttp. The expected final state of every payment intent is known from
the generated events (the highest-ranked status it was sent); it is compared with the state derived from
what the bridge published on gateway.events.v1 and with the bridge's own table.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter, defaultdict
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from services.gateway_bridge import domain
from services.gateway_bridge.app import create_service
from services.gateway_bridge.settings import GatewayBridgeSettings
from services.gateway_bridge.storage import payment_intents
from shared.contracts import Topic
from tests.conftest import Infra
from tests.support import stripe_fake as sf
from tests.support.helpers import eventually, read_topic, run_all_while_progressing, running

pytestmark = pytest.mark.kafka

DELIVERIES = 10_000
DUPLICATE_SHARE = 0.30
UNIQUE_EVENTS = int(DELIVERIES * (1 - DUPLICATE_SHARE))  # 7,000
ACCOUNTS = 200
CONCURRENCY = 48

# Realistic lives of a payment intent, as the statuses Stripe reports for it (in true order).
LIVES = [
    ["processing", "succeeded"],
    ["processing", "failed"],
    ["processing", "failed", "processing", "succeeded"],
    ["succeeded"],
    ["processing", "succeeded", "refunded"],
    ["processing", "succeeded", "disputed"],
    ["succeeded", "partially_refunded", "refunded"],
    ["failed"],
]
EVENT_TYPE = {
    "processing": "payment_intent.processing",
    "failed": "payment_intent.payment_failed",
    "succeeded": "payment_intent.succeeded",
}


def generate(rnd: random.Random, prefix: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Unique Stripe events for many payment intents, and each intent's expected final status."""
    events: list[dict[str, Any]] = []
    expected: dict[str, str] = {}
    n = 0
    while len(events) < UNIQUE_EVENTS:
        n += 1
        intent = f"pi_{prefix}{n:06d}"
        account = f"RP-{prefix}-{rnd.randrange(ACCOUNTS):03d}"
        meta = sf.metadata(account, f"INV-{prefix}-{n}", rnd.choice(["bill", "service", "installment"]))
        life = rnd.choice(LIVES)[: UNIQUE_EVENTS - len(events)]
        amount = rnd.randrange(100, 500_000)
        for status in life:
            if status in EVENT_TYPE:
                events.append(sf.payment_intent_event(EVENT_TYPE[status], intent, meta, amount=amount))
            elif status == "disputed":
                events.append(sf.dispute_event(intent, amount=amount, meta=meta))
            else:
                refunded = amount if status == "refunded" else amount // 3
                events.append(sf.refund_event(intent, amount=amount, refunded=refunded, meta=meta))
        expected[intent] = max(life, key=domain.PAYMENT_RANK.__getitem__)
    return events, expected


@pytest.mark.timeout(1800)  # a generous outer bound: the run itself fails only when deliveries stop finishing
async def test_10000_duplicated_and_reordered_webhooks_end_in_exactly_the_right_state(infra: Infra) -> None:
    """INVARIANT: whatever Stripe duplicates or reorders, every payment intent ends in its latest status,
    each Stripe event is published exactly once, and a published status never moves back."""
    rnd = random.Random(20251125)
    prefix = uuid.uuid4().hex[:8]
    unique, expected = generate(rnd, prefix)
    deliveries = unique + rnd.choices(unique, k=DELIVERIES - len(unique))
    rnd.shuffle(deliveries)
    bodies = {e["id"]: sf.body_of(e) for e in unique}

    settings = GatewayBridgeSettings(
        database_url=infra.database_url,
        kafka_bootstrap_servers=infra.bootstrap_servers,
        stripe_webhook_secret=SecretStr(sf.SECRET),
        database_pool_size=20,
        development=True,
    )
    service = create_service(settings)
    outcomes: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    started = time.perf_counter()
    async with running(service), sf.serving(service.http) as base:
        # aiohttp: the sender shares this process and its event loop with the bridge, so it has to be cheap.
        # No clock on the whole run: at most CONCURRENCY deliveries are in flight (so none waits for a pooled
        # connection), one answer may take up to two minutes, and the run fails only if deliveries stop finishing.
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=120, sock_read=120)
        async with aiohttp.ClientSession(base_url=base, connector=connector, timeout=timeout) as client:

            async def deliver(event: dict[str, Any]) -> None:
                body = bodies[event["id"]]
                # Every delivery is signed afresh, as Stripe does for each retry.
                headers = {"stripe-signature": sf.sign(body), "content-type": "application/json"}
                async with client.post("/webhooks/stripe", data=body, headers=headers) as response:
                    statuses[response.status] += 1
                    if response.status == 200:
                        outcomes[(await response.json())["outcome"]] += 1

            await run_all_while_progressing([deliver(e) for e in deliveries], concurrency=CONCURRENCY)
        sent = time.perf_counter() - started

        assert statuses == {200: DELIVERIES}
        assert outcomes["duplicate"] == DELIVERIES - UNIQUE_EVENTS
        assert outcomes["published"] + outcomes["superseded"] == UNIQUE_EVENTS
        assert outcomes["published"] >= len(expected)

        async def published() -> list[Any]:
            records = [
                r
                for r in await read_topic(infra.bootstrap_servers, Topic.GATEWAY_EVENTS)
                if r.key.decode().startswith(f"RP-{prefix}-")
            ]
            return records if len(records) >= UNIQUE_EVENTS else []

        records = await eventually(published, within=600, interval=0.5)
        async with service.sessions() as session:
            rows = {
                r.payment_intent_id: r
                for r in (
                    await session.execute(
                        select(payment_intents).where(payment_intents.c.payment_intent_id.like(f"pi_{prefix}%"))
                    )
                ).all()
            }

    records.sort(key=lambda r: (r.partition, r.offset))
    events = [json.loads(r.value) for r in records]
    assert len(events) == UNIQUE_EVENTS
    assert Counter(e["data"]["gateway_event_id"] for e in events) == Counter(bodies.keys()), "each exactly once"

    by_intent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        assert e["subject"] == e["data"]["account_number"], "keyed by account number"
        by_intent[e["data"]["payment_intent_id"]].append(e["data"])

    def final_status(statuses: list[str]) -> str | None:
        """What a reader of the topic ends at, applying each status in topic order under the forward-only rule."""
        state: str | None = None
        for status in statuses:
            state = domain.later(state, status, domain.PAYMENT_RANK)
        return state

    derived_from_topic = {
        intent: final_status([d["gateway_status"] for d in datas]) for intent, datas in by_intent.items()
    }
    own_table = {intent: row.gateway_status for intent, row in rows.items()}
    assert len(expected) == len(derived_from_topic) == len(own_table)
    assert derived_from_topic == expected
    assert own_table == expected
    for intent, datas in by_intent.items():
        moves = [domain.PAYMENT_RANK[d["gateway_status"]] for d in datas if not d["superseded"]]
        assert moves == sorted(set(moves)), f"{intent}: published moves go strictly forward in topic order"
        assert moves[-1] == domain.PAYMENT_RANK[expected[intent]]
        assert rows[intent].events_applied == len(datas)
        assert rows[intent].webhook_status == domain.current_view(expected[intent], None).webhook_status

    print(
        f"\nreplay: {DELIVERIES} deliveries ({len(expected)} payment intents) in {sent:.1f}s "
        f"= {DELIVERIES / sent:.0f}/s; outcomes {dict(outcomes)}"
    )
