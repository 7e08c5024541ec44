"""Errors with a stable code. HTTP turns them into RFC 9457 problem details; consumers send them to the DLQ."""

from __future__ import annotations


class Rejected(Exception):
    """A request or message that can never succeed as sent. Nothing was changed."""

    status = 422

    def __init__(self, code: str, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.field = field


class NotFound(Rejected):
    status = 404


class Conflict(Rejected):
    status = 409


class Forbidden(Rejected):
    """Allowed for the role, but not for this actor on this thing (e.g. approving one's own request)."""

    status = 403
