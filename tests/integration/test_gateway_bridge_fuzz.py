"""Fuzzed webhook bodies and headers against the running bridge on the real database.

INVARIANT: no input ever makes the webhook answer 5xx, and nothing is stored or published unless the body
carries a valid, recent Stripe signature.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from sqlalchemy import func, select

from services.gateway_bridge.app import GatewayBridge, create_service
from services.gateway_bridge.settings import GatewayBridgeSettings
from services.gateway_bridge.storage import plumbing, webhook_events
from tests.conftest import Infra
from tests.support import stripe_fake as sf
from tests.support.helpers import running

pytestmark = pytest.mark.kafka

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
async def served(infra: Infra) -> AsyncIterator[tuple[GatewayBridge, httpx.AsyncClient]]:
    service = create_service(
        GatewayBridgeSettings(
            database_url=infra.database_url,
            kafka_bootstrap_servers=infra.bootstrap_servers,
            stripe_webhook_secret=SecretStr(sf.SECRET),
            development=True,
        )
    )
    async with running(service), sf.serving(service.http) as base, httpx.AsyncClient(base_url=base) as client:
        yield service, client


async def stored(service: GatewayBridge) -> tuple[int, int]:
    async with service.sessions() as session:
        events = (await session.execute(select(func.count()).select_from(webhook_events))).scalar_one()
        outbox = (await session.execute(select(func.count()).select_from(plumbing.outbox))).scalar_one()
    return int(events), int(outbox)


header_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=200),
    st.builds(
        lambda t, sigs: f"t={t}," + ",".join(f"{k}={v}" for k, v in sigs),
        st.one_of(st.integers(), st.text(max_size=12)),
        st.lists(
            st.tuples(
                st.sampled_from(["v1", "v0", "t", "", "v1 "]), st.text(alphabet="0123456789abcdef=,", max_size=70)
            ),
            max_size=4,
        ),
    ),
)
bodies = st.one_of(
    st.binary(max_size=2000),
    st.text(max_size=500).map(str.encode),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
        max_leaves=20,
    ).map(lambda v: sf.body_of({"id": "evt_fuzz", "type": "payment_intent.succeeded", "data": v})),
)


def on_the_wire(value: str) -> bytes:
    """A header value as raw bytes, so any octet a client could send reaches the server (httpx refuses
    non-ASCII text); only what HTTP cannot carry in a header (control characters, edge spaces) is dropped."""
    return bytes(b for b in value.encode() if b >= 0x20 and b != 0x7F).strip(b" ")


async def post(client: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> httpx.Response:
    raw = [(name.encode(), on_the_wire(value)) for name, value in headers.items()]
    return await client.post("/webhooks/stripe", content=body, headers=raw)


@FUZZ
# The stripe library's constant-time compare raises TypeError on a non-ASCII signature: still a 400.
@example(body=b"{}", header=f"t={int(time.time())},v1=\u00e9\u00e9", extra={})
@given(
    body=bodies,
    header=st.one_of(st.none(), header_values),
    extra=st.dictionaries(
        st.sampled_from(["content-type", "content-encoding", "x-forwarded-for", "stripe-account"]),
        st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
        max_size=3,
    ),
)
async def test_fuzzed_unsigned_webhooks_are_never_5xx_and_never_stored(
    served: tuple[GatewayBridge, httpx.AsyncClient], body: bytes, header: str | None, extra: dict[str, str]
) -> None:
    service, client = served
    before = await stored(service)
    headers = dict(extra)
    if header is not None:
        headers["stripe-signature"] = header
    response = await post(client, body, headers)
    assert response.status_code < 500
    assert response.status_code in (400, 413)
    assert await stored(service) == before


@FUZZ
@given(
    body=bodies,
    age=st.integers(min_value=301, max_value=10**9),
    secret=st.sampled_from([sf.OLD_SECRET, "whsec_other", "x"]),
)
async def test_stale_or_foreign_signatures_are_rejected_whatever_the_body(
    served: tuple[GatewayBridge, httpx.AsyncClient], body: bytes, age: int, secret: str
) -> None:
    service, client = served
    before = await stored(service)
    try:
        text = body.decode()
    except UnicodeDecodeError:
        text = None
    headers: list[dict[str, str]] = []
    if text is not None:
        headers.append({"stripe-signature": sf.sign(body, sf.SECRET, timestamp=int(time.time()) - age)})
        headers.append({"stripe-signature": sf.sign(body, secret)})
    for h in headers:
        response = await post(client, body, h)
        assert response.status_code == 400
    assert await stored(service) == before


def any_event() -> st.SearchStrategy[dict[str, Any]]:
    metadata = st.one_of(
        st.none(),
        st.dictionaries(
            st.sampled_from(["account_number", "payment_type", "item_reference", "note"]),
            st.one_of(st.text(max_size=120), st.integers(), st.none(), st.sampled_from(["bill", "service", "gift"])),
        ),
    )
    obj = st.fixed_dictionaries(
        {},
        optional={
            "id": st.one_of(st.sampled_from(["pi_fuzz1", "po_fuzz1", "ch_fuzz1"]), st.text(max_size=10), st.integers()),
            "amount": st.one_of(st.integers(min_value=-5, max_value=10**15), st.floats(), st.text(max_size=5)),
            "amount_received": st.one_of(st.integers(min_value=-5, max_value=10**9), st.none()),
            "currency": st.one_of(st.sampled_from(["usd", "jpy", "kwd"]), st.text(max_size=4), st.none()),
            "created": st.one_of(st.integers(min_value=-10, max_value=10**12), st.none(), st.text(max_size=5)),
            "metadata": metadata,
            "payment_intent": st.one_of(st.sampled_from(["pi_fuzz1", "pi_fuzz_unknown"]), st.none(), st.integers()),
            "refunded": st.one_of(st.booleans(), st.none()),
        },
    )
    return st.fixed_dictionaries(
        {
            "id": st.builds(lambda: sf.new_id("evt")),
            "type": st.sampled_from(
                [
                    "payment_intent.succeeded",
                    "payment_intent.processing",
                    "payment_intent.payment_failed",
                    "charge.refunded",
                    "charge.dispute.created",
                    "payout.paid",
                    "customer.created",
                ]
            ),
        },
        optional={
            "created": st.one_of(st.integers(min_value=-10, max_value=10**12), st.text(max_size=4), st.none()),
            "data": st.one_of(
                st.fixed_dictionaries({"object": st.one_of(obj, st.integers(), st.none())}), st.text(max_size=3)
            ),
            "livemode": st.one_of(st.booleans(), st.text(max_size=3)),
        },
    )


@FUZZ
@given(event=any_event())
async def test_signed_but_strange_events_are_accepted_or_rejected_never_5xx(
    served: tuple[GatewayBridge, httpx.AsyncClient], event: dict[str, Any]
) -> None:
    """A correctly signed event with odd content is Stripe's: it is stored (2xx) and routed or dead-lettered."""
    _, client = served
    body = sf.body_of(event)
    response = await post(client, body, {"stripe-signature": sf.sign(body)})
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] in ("published", "superseded", "ignored", "dead_lettered", "payout_pending")
