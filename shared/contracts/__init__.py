"""Event contracts: topics, the CloudEvents envelope and every payload, versioned with their topic."""

from shared.contracts.envelope import CONTENT_TYPE, Envelope, EnvelopeError, decode_envelope, new_envelope, peek_type
from shared.contracts.events import EVENT_TYPES, PaymentStatus, counts_as_collected, parse_data
from shared.contracts.topics import ALL_TOPICS, Topic, dlq

__all__ = [
    "ALL_TOPICS",
    "CONTENT_TYPE",
    "EVENT_TYPES",
    "Envelope",
    "EnvelopeError",
    "PaymentStatus",
    "Topic",
    "counts_as_collected",
    "decode_envelope",
    "dlq",
    "new_envelope",
    "parse_data",
    "peek_type",
]
