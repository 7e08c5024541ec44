"""Stripe as the gateway bridge sees it in tests: signed webhook bodies and a local Stripe-compatible API.

The event and balance-transaction JSON follows what Stripe sends (recorded shapes, trimmed to the fields
that matter plus the usual noise such as payment method details). Nothing here talks to the internet: the
API server listens on loopback and the bridge is pointed at it with `STRIPE_API_BASE`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import stripe
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from paydesk.embedded import free_port

SECRET = "whsec_test_paydesk_current"
OLD_SECRET = "whsec_test_paydesk_previous"
API_KEY = "sk_test_paydesk_local"


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def body_of(event: dict[str, Any]) -> bytes:
    return json.dumps(event, indent=2).encode()


def sign(body: bytes, secret: str = SECRET, *, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header Stripe would send for `body`."""
    return str(stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp=timestamp))


def sign_rotating(body: bytes, secrets: list[str], *, timestamp: int | None = None) -> str:
    """During secret rotation Stripe signs with every active secret: one `t=` and several `v1=`."""
    timestamp = timestamp or int(time.time())
    parts = [f"t={timestamp}"]
    for secret in secrets:
        parts.append(sign(body, secret, timestamp=timestamp).split(",", 1)[1])
    return ",".join(parts)


def card_details() -> dict[str, Any]:
    # What Stripe puts in a charge: brand, last4, expiry, fingerprint; never the full number.
    return {
        "card": {
            "brand": "visa",
            "country": "US",
            "exp_month": 12,
            "exp_year": 2030,
            "fingerprint": "Xt5EWLLDS7FJjR1c",
            "funding": "credit",
            "last4": "4242",
            "network": "visa",
        },
        "type": "card",
    }


def metadata(account: str, item: str = "INV-2025-001234", payment_type: str = "bill") -> dict[str, str]:
    return {"account_number": account, "payment_type": payment_type, "item_reference": item}


def event(
    event_type: str, obj: dict[str, Any], *, event_id: str | None = None, created: int | None = None
) -> dict[str, Any]:
    return {
        "id": event_id or new_id("evt"),
        "object": "event",
        "api_version": "2025-04-30.basil",
        "created": created if created is not None else int(time.time()),
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": new_id("req"), "idempotency_key": str(uuid.uuid4())},
        "type": event_type,
    }


def payment_intent(
    intent_id: str, status: str, *, amount: int = 14550, meta: dict[str, str] | None = None, created: int = 0
) -> dict[str, Any]:
    return {
        "id": intent_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_received": amount if status == "succeeded" else 0,
        "capture_method": "automatic",
        "created": created or int(time.time()) - 86400 * 2,
        "currency": "usd",
        "customer": None,
        "latest_charge": intent_id.replace("pi_", "ch_"),
        "livemode": False,
        "metadata": meta or {},
        "payment_method": new_id("pm"),
        "payment_method_types": ["card"],
        "status": status,
    }


def payment_intent_event(event_type: str, intent_id: str, meta: dict[str, str] | None, **kwargs: Any) -> dict[str, Any]:
    status = {
        "payment_intent.succeeded": "succeeded",
        "payment_intent.processing": "processing",
        "payment_intent.payment_failed": "requires_payment_method",
    }[event_type]
    return event(event_type, payment_intent(intent_id, status, meta=meta, amount=kwargs.pop("amount", 14550)), **kwargs)


def charge(
    intent_id: str, *, amount: int = 14550, refunded: int = 0, meta: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "id": intent_id.replace("pi_", "ch_"),
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": refunded,
        "balance_transaction": new_id("txn"),
        "captured": True,
        "created": int(time.time()) - 86400,
        "currency": "usd",
        "metadata": meta or {},
        "paid": True,
        "payment_intent": intent_id,
        "payment_method_details": card_details(),
        "refunded": refunded >= amount,
        "status": "succeeded",
    }


def refund_event(
    intent_id: str, *, amount: int = 14550, refunded: int = 14550, meta: dict[str, str] | None = None, **kw: Any
) -> dict[str, Any]:
    return event("charge.refunded", charge(intent_id, amount=amount, refunded=refunded, meta=meta), **kw)


def dispute_event(
    intent_id: str, *, amount: int = 14550, meta: dict[str, str] | None = None, **kw: Any
) -> dict[str, Any]:
    dispute = {
        "id": new_id("dp"),
        "object": "dispute",
        "amount": amount,
        "charge": intent_id.replace("pi_", "ch_"),
        "created": int(time.time()),
        "currency": "usd",
        "metadata": meta or {},
        "payment_intent": intent_id,
        "reason": "fraudulent",
        "status": "needs_response",
    }
    return event("charge.dispute.created", dispute, **kw)


def payout_event(
    event_type: str,
    payout_id: str,
    *,
    amount: int = 100000,
    account: str | None = None,
    meta: dict[str, str] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """A payout webhook; `account` makes it a Connect event (a connected account's payout)."""
    status = event_type.split(".", 1)[1]
    payout = {
        "id": payout_id,
        "object": "payout",
        "amount": amount,
        "arrival_date": int(time.time()) + 86400,
        "automatic": True,
        "currency": "usd",
        "destination": new_id("ba"),
        "method": "standard",
        "failure_code": "account_closed" if status == "failed" else None,
        "failure_message": "The bank account has been closed." if status == "failed" else None,
        "metadata": meta or {},
        "status": {"created": "pending", "paid": "paid", "failed": "failed", "canceled": "canceled"}[status],
        "type": "bank_account",
    }
    made = event(event_type, payout, **kw)
    if account is not None:
        made["account"] = account
    return made


def transfer_event(
    event_type: str, transfer_id: str, destination: str, *, amount: int = 25000, meta: dict[str, str] | None = None
) -> dict[str, Any]:
    """A transfer of the platform's money to a connected account (`transfer.created`, `transfer.reversed`)."""
    transfer = {
        "id": transfer_id,
        "object": "transfer",
        "amount": amount,
        "amount_reversed": amount if event_type == "transfer.reversed" else 0,
        "created": int(time.time()),
        "currency": "usd",
        "destination": destination,
        "destination_payment": new_id("py"),
        "metadata": meta or {},
        "reversed": event_type == "transfer.reversed",
    }
    return event(event_type, transfer)


def payout_net(intents: list[tuple[str, int]]) -> int:
    """What `balance_transactions` nets for these charges: the amount of their payout."""
    return sum(amount - (round(amount * 0.029) + 30) for _, amount in intents)


def balance_transactions(payout_id: str, intents: list[tuple[str, int]], *, expanded: bool) -> list[dict[str, Any]]:
    """A payout's balance transactions as Stripe lists them: one per charge, a fee line, the payout itself."""
    rows: list[dict[str, Any]] = []
    for intent_id, amount in intents:
        source: Any = charge(intent_id, amount=amount) if expanded else intent_id.replace("pi_", "ch_")
        fee = round(amount * 0.029) + 30
        rows.append(
            {
                "id": new_id("txn"),
                "object": "balance_transaction",
                "amount": amount,
                "available_on": int(time.time()),
                "created": int(time.time()) - 86400,
                "currency": "usd",
                "description": None,
                "exchange_rate": None,
                "fee": fee,
                "fee_details": [
                    {
                        "amount": fee,
                        "application": None,
                        "currency": "usd",
                        "description": "Stripe processing fees",
                        "type": "stripe_fee",
                    }
                ],
                "net": amount - fee,
                "reporting_category": "charge",
                "source": source,
                "status": "available",
                "type": "charge",
            }
        )
    total = sum(r["net"] for r in rows)
    rows.append(
        {
            "id": new_id("txn"),
            "object": "balance_transaction",
            "amount": -total,
            "currency": "usd",
            "fee": 0,
            "fee_details": [],
            "net": -total,
            "reporting_category": "payout",
            "source": payout_id,
            "status": "available",
            "type": "payout",
        }
    )
    return rows


@dataclass
class FakeStripeApi:
    """GET /v1/balance_transactions?payout=... with Stripe's list shape, paging and auth; can fail on purpose."""

    payouts: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    fail_next: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    # POST /v1/payment_intents (form-encoded, honouring Idempotency-Key) and GET /v1/payment_intents/{id}.
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    intent_keys: dict[str, str] = field(default_factory=dict)

    def app(self) -> Starlette:
        async def list_balance_transactions(request: Request) -> JSONResponse:
            params = request.query_params
            self.requests.append(dict(params))
            if request.headers.get("authorization") != f"Bearer {API_KEY}":
                return JSONResponse(
                    {"error": {"message": "Invalid API Key provided", "type": "invalid_request_error"}}, 401
                )
            if self.fail_next > 0:
                self.fail_next -= 1
                return JSONResponse({"error": {"message": "An unknown error occurred", "type": "api_error"}}, 500)
            payout_id = params.get("payout", "")
            if payout_id not in self.payouts:
                return JSONResponse(
                    {
                        "error": {
                            "code": "resource_missing",
                            "message": f"No such payout: '{payout_id}'",
                            "param": "payout",
                            "type": "invalid_request_error",
                        }
                    },
                    404,
                )
            expanded = "data.source" in params.getlist("expand[0]") + params.getlist("expand[]")
            rows = balance_transactions(payout_id, self.payouts[payout_id], expanded=expanded)
            # Stable ids across pages: the listing is recomputed, so page by position.
            limit = int(params.get("limit", "10"))
            start = int(params.get("starting_after", "txn_0").split("_", 1)[1] or 0)
            for index, row in enumerate(rows, start=1):
                row["id"] = f"txn_{index}"
            page = rows[start : start + limit]
            return JSONResponse(
                {
                    "object": "list",
                    "data": page,
                    "has_more": start + limit < len(rows),
                    "url": "/v1/balance_transactions",
                }
            )

        def refused(request: Request) -> JSONResponse | None:
            if request.headers.get("authorization") != f"Bearer {API_KEY}":
                return JSONResponse(
                    {"error": {"message": "Invalid API Key provided", "type": "invalid_request_error"}}, 401
                )
            return None

        async def create_payment_intent(request: Request) -> JSONResponse:
            if (answer := refused(request)) is not None:
                return answer
            form = await request.form()
            self.requests.append({k: str(v) for k, v in form.items()})
            key = request.headers.get("idempotency-key")
            if key and key in self.intent_keys:
                return JSONResponse(self.intents[self.intent_keys[key]])
            meta = {k[len("metadata[") : -1]: str(v) for k, v in form.items() if k.startswith("metadata[")}
            intent_id = new_id("pi")
            intent = payment_intent(intent_id, "requires_payment_method", amount=int(str(form["amount"])), meta=meta)
            intent |= {
                "currency": str(form.get("currency", "usd")),
                "created": int(time.time()),
                "client_secret": f"{intent_id}_secret_{uuid.uuid4().hex[:16]}",
                "amount_received": 0,
                "payment_method": None,
                "latest_charge": None,
            }
            self.intents[intent_id] = intent
            if key:
                self.intent_keys[key] = intent_id
            return JSONResponse(intent)

        async def get_payment_intent(request: Request) -> JSONResponse:
            if (answer := refused(request)) is not None:
                return answer
            intent_id = request.path_params["intent_id"]
            if intent_id not in self.intents:
                return JSONResponse(
                    {
                        "error": {
                            "code": "resource_missing",
                            "message": f"No such payment_intent: '{intent_id}'",
                            "param": "intent",
                            "type": "invalid_request_error",
                        }
                    },
                    404,
                )
            return JSONResponse(self.intents[intent_id])

        return Starlette(
            routes=[
                Route("/v1/balance_transactions", list_balance_transactions),
                Route("/v1/payment_intents", create_payment_intent, methods=["POST"]),
                Route("/v1/payment_intents/{intent_id}", get_payment_intent),
            ]
        )


@asynccontextmanager
async def serving(app: Any, *, port: int | None = None) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on loopback in this event loop; yields its base URL.

    Lifespan is off: a Paydesk service is started and stopped by `running()`, not by the HTTP server.
    """
    port = port or free_port()
    # A long keep-alive: under load a pooled connection can sit idle past uvicorn's 5 s default and be closed
    # just as the client reuses it, which shows up as a spurious ReadError.
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_keep_alive=120,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
