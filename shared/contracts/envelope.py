"""The CloudEvents envelope every message travels in.

We publish in structured mode (the whole envelope is the Kafka value, content type
`application/cloudevents+json`). Other systems may also send binary mode: `ce_*` headers carry the
attributes and the value is the bare `data`. Both decode to the same `Envelope`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, Field, ValidationError

CONTENT_TYPE = "application/cloudevents+json"


class EnvelopeError(ValueError):
    """A message that is not a valid envelope; the text names what is wrong."""


class Envelope(BaseModel):
    """One event or command, with CloudEvents attributes; `subject` is the account number (the Kafka key)."""

    id: uuid.UUID = Field(description="Unique event id; consumers use it to ignore redeliveries.")
    type: str = Field(description="Event type, e.g. `payment.posted`.", examples=["payment.posted"])
    specversion: Literal["1.0"] = "1.0"
    time: AwareDatetime = Field(description="When the event happened, timezone-aware.")
    source: str = Field(description="The service or system that produced it.", examples=["payments"])
    subject: str = Field(min_length=1, description="Account number; also the Kafka key.", examples=["WU-10001"])
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any] = Field(description="The payload; its model is given by `type`.")

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


def new_envelope(event_type: str, *, source: str, subject: str, data: BaseModel | dict[str, Any]) -> Envelope:
    """Wrap a payload in a fresh envelope stamped now (UTC)."""
    payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
    return Envelope(
        id=uuid.uuid4(), type=event_type, time=datetime.now(UTC), source=source, subject=subject, data=payload
    )


def _header(headers: Mapping[str, bytes | str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


# How `Envelope.to_bytes` starts: the id, then the type. Anchored at the first byte, so the match is the top-level
# `type` and never a key inside `data`.
_OUR_TYPE = re.compile(rb'\{"id":"[0-9a-f-]{36}","type":"([A-Za-z0-9_.:-]{1,100})",')


def peek_type(value: bytes | None, headers: Mapping[str, bytes | str]) -> str | None:
    """The event type of a record without decoding it, where that is cheap and certain: the `ce_type` header of
    binary mode, or the start of a structured envelope as we write it. None otherwise (decode it to know)."""
    if "ce_id" in headers:
        return _header(headers, "ce_type")
    found = _OUR_TYPE.match(value) if value else None
    return found.group(1).decode() if found else None


def decode_envelope(value: bytes | None, headers: Mapping[str, bytes | str]) -> Envelope:
    """Decode a Kafka record in structured or binary CloudEvents mode, or raise `EnvelopeError`."""
    if not value:
        raise EnvelopeError("empty message value")
    if "ce_id" not in headers:
        try:
            # pydantic parses the JSON itself, a third faster than json.loads then validating the dict; anything
            # it refuses is decoded again below, the slow way, for the error message that names what is wrong.
            return Envelope.model_validate_json(value)
        except ValidationError:
            pass
    try:
        body = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EnvelopeError(f"value is not JSON: {exc}") from exc
    ce_id = _header(headers, "ce_id")
    if ce_id is not None:
        fields: dict[str, Any] = {
            "id": ce_id,
            "type": _header(headers, "ce_type"),
            "specversion": _header(headers, "ce_specversion"),
            "time": _header(headers, "ce_time"),
            "source": _header(headers, "ce_source"),
            "subject": _header(headers, "ce_subject"),
            "data": body,
        }
    elif isinstance(body, dict):
        fields = body
    else:
        raise EnvelopeError("structured-mode value must be a JSON object")
    try:
        return Envelope.model_validate(fields)
    except ValidationError as exc:
        raise EnvelopeError(describe_validation_error(exc)) from exc


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming every bad field, e.g. `amount: Input should be greater than 0`."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors())
