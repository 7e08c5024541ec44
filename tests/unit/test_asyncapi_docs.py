"""The AsyncAPI documents in docs/asyncapi are generated from the code and must not drift from it."""

from pathlib import Path

import pytest

from paydesk.cli import build_for_docs
from paydesk.registry import SERVICES

DOCS = Path(__file__).resolve().parents[2] / "docs" / "asyncapi"


@pytest.mark.parametrize("name", list(SERVICES))
def test_committed_asyncapi_document_matches_the_code(name: str) -> None:
    committed = (DOCS / f"{name}.yaml").read_text()
    assert committed == build_for_docs(name).asyncapi_yaml(), "run `.venv/bin/paydesk asyncapi` and commit"


def test_payments_document_names_the_topics_it_consumes_and_publishes() -> None:
    document = (DOCS / "payments.yaml").read_text()
    assert "address: billing.receivables.v1" in document
    assert "address: payments.events.v1" in document
    assert "payment.posted" in document
