"""Request body size cap: a body over the limit is answered 413 with a problem body, before any route reads it."""

from __future__ import annotations

import json

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """Raised inside `receive` once a streamed body passes the limit.

    An HTTPException, because FastAPI turns any other error while reading a body into a 400; this one reaches
    the app's problem handler as a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes")


def _problem(limit: int) -> bytes:
    return json.dumps(
        {
            "type": "https://paydesk.dev/problems/payload_too_large",
            "title": "payload too large",
            "status": 413,
            "code": "payload_too_large",
            "detail": f"request body is larger than {limit} bytes",
        }
    ).encode()


class BodySizeLimit:
    """Refuses bodies over `limit` bytes: by `Content-Length` at once, or while a chunked body streams in.

    Plain ASGI, so the cap holds for every route (and FastAPI never buffers an oversized body in memory).
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = _problem(self.limit)
        headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class RefuseNulCharacters:
    """Refuses a URL carrying a NUL character (`%00`) with a 422 problem naming the query.

    Postgres text can never hold NUL, so such a value reaching a query would fail there as a 500; no business
    value contains one, so it is refused at the door for every route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = bytes(scope.get("query_string") or b"") + bytes(scope.get("raw_path") or b"")
            if b"%00" in raw or b"\x00" in raw or "\x00" in scope.get("path", ""):
                body = json.dumps(
                    {
                        "type": "https://paydesk.dev/problems/invalid_characters",
                        "title": "invalid characters",
                        "status": 422,
                        "code": "invalid_characters",
                        "detail": "the URL carries a NUL character, which no value may contain",
                        "field": "query",
                    }
                ).encode()
                headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
                await send({"type": "http.response.start", "status": 422, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
