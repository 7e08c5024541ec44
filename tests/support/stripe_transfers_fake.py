"""Stripe Connect's transfers as the payouts service sees them in tests: a local Stripe-compatible API that keeps
every transfer and counts requests per idempotency key, replaying the first answer like Stripe does.

Kept apart from `stripe_fake.py` (the gateway bridge's balance transactions) so the two grow independently;
it reuses that module's API key and server.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.stripe_fake import API_KEY, new_id

KEY_LIFETIME_SECONDS = 24 * 3600


def _error(status: int, message: str, kind: str = "invalid_request_error", **extra: Any) -> JSONResponse:
    return JSONResponse(_error_body(message, kind, **extra), status)


def _error_body(message: str, kind: str = "invalid_request_error", **extra: Any) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, **extra}}


def _nest(form: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (`metadata[key]=value`) back into a dict."""
    params: dict[str, Any] = {}
    for key, value in form:
        if "[" in key and key.endswith("]"):
            outer, inner = key[:-1].split("[", 1)
            params.setdefault(outer, {})[inner] = value
        else:
            params[key] = value
    return params


@dataclass
class FakeStripeTransfers:
    """POST /v1/transfers, GET /v1/transfers (list) and GET /v1/transfers/{id}: what Connect payouts need, with
    idempotency keys kept for 24 hours as Stripe does, on a clock a test can move."""

    transfers: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Every POST /v1/transfers, per Idempotency-Key (a replay counts too).
    requests_per_key: dict[str, int] = field(default_factory=dict)
    # The first answer per key, replayed to every retry with the same parameters.
    answers: dict[str, tuple[dict[str, Any], int, dict[str, Any]]] = field(default_factory=dict)
    refuse_destinations: set[str] = field(default_factory=set)
    fail_next: int = 0
    # Stripe's idea of now (seconds); a test moves it forward to see keys expire.
    clock: float = field(default_factory=time.time)
    # When each key was first used: Stripe forgets a key 24 hours later, and the same key then creates anew.
    key_used_at: dict[str, float] = field(default_factory=dict)
    # Every GET /v1/transfers (a list), with its query.
    list_requests: list[dict[str, str]] = field(default_factory=list)

    def advance(self, seconds: float) -> None:
        self.clock += seconds

    def _forget_expired_keys(self) -> None:
        for key, used in list(self.key_used_at.items()):
            if self.clock - used >= KEY_LIFETIME_SECONDS:
                self.answers.pop(key, None)
                del self.key_used_at[key]

    def created_for(self, payout_id: str) -> list[dict[str, Any]]:
        """Transfers really created (not replays) for one of our payouts."""
        return [t for t in self.transfers.values() if t["metadata"].get("paydesk_payout_id") == payout_id]

    def app(self) -> Starlette:
        async def create(request: Request) -> JSONResponse:
            if request.headers.get("authorization") != f"Bearer {API_KEY}":
                return _error(401, "Invalid API Key provided")
            key = request.headers.get("idempotency-key")
            if key:
                self.requests_per_key[key] = self.requests_per_key.get(key, 0) + 1
            if self.fail_next > 0:
                self.fail_next -= 1
                return _error(500, "An unknown error occurred", "api_error")
            params = _nest(parse_qsl((await request.body()).decode(), keep_blank_values=True))
            self._forget_expired_keys()
            if key and key in self.answers:
                first_params, status, body = self.answers[key]
                if first_params != params:
                    return _error(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters they were first "
                        "used with.",
                        "idempotency_error",
                    )
                return JSONResponse(body, status, headers={"Idempotent-Replayed": "true"})
            destination = str(params.get("destination", ""))
            if destination in self.refuse_destinations or not destination.startswith("acct_"):
                status, body = (
                    400,
                    _error_body(f"No such destination: '{destination}'", code="resource_missing", param="destination"),
                )
            else:
                body = {
                    "id": new_id("tr"),
                    "object": "transfer",
                    "amount": int(params["amount"]),
                    "currency": params["currency"],
                    "destination": destination,
                    "transfer_group": params.get("transfer_group"),
                    "description": params.get("description"),
                    "metadata": params.get("metadata", {}),
                    "created": int(self.clock),
                    "livemode": False,
                    "reversed": False,
                    "amount_reversed": 0,
                }
                self.transfers[body["id"]] = body
                status = 200
            if key:
                self.answers[key] = (params, status, body)
                self.key_used_at[key] = self.clock
            return JSONResponse(body, status)

        async def listing(request: Request) -> JSONResponse:
            """Newest first, filtered by `transfer_group` and `destination`, paged by `starting_after`."""
            if request.headers.get("authorization") != f"Bearer {API_KEY}":
                return _error(401, "Invalid API Key provided")
            query = dict(request.query_params)
            self.list_requests.append(query)
            found = [
                t
                for t in sorted(self.transfers.values(), key=lambda t: (t["created"], t["id"]), reverse=True)
                if all(t.get(name) == query[name] for name in ("transfer_group", "destination") if name in query)
            ]
            if "starting_after" in query:
                ids = [t["id"] for t in found]
                found = found[ids.index(query["starting_after"]) + 1 :] if query["starting_after"] in ids else []
            limit = int(query.get("limit", "10"))
            page = found[:limit]
            return JSONResponse(
                {"object": "list", "url": "/v1/transfers", "has_more": len(found) > limit, "data": page}
            )

        async def retrieve(request: Request) -> JSONResponse:
            transfer = self.transfers.get(request.path_params["transfer_id"])
            if transfer is None:
                return _error(404, "No such transfer", code="resource_missing")
            return JSONResponse(transfer)

        return Starlette(
            routes=[
                Route("/v1/transfers", create, methods=["POST"]),
                Route("/v1/transfers", listing, methods=["GET"]),
                Route("/v1/transfers/{transfer_id}", retrieve, methods=["GET"]),
            ]
        )
