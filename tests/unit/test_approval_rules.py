"""The rules of maker-checker approvals, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from shared.approvals import Approval, ApprovalStatus, check_decision, needs_approval
from shared.errors import Conflict, Forbidden


def approval(status: ApprovalStatus = ApprovalStatus.PENDING, requested_by: str = "Jane Smith") -> Approval:
    return Approval(
        approval_id="APR-1",
        kind="credit_note",
        subject="R-5001",
        account_number="WU-10001",
        amount=Decimal("50.00"),
        currency="USD",
        payload={},
        reason="goodwill",
        requested_by=requested_by,
        requested_at=datetime(2025, 4, 20, tzinfo=UTC),
        status=status,
    )


@pytest.mark.parametrize(
    ("amount", "limit", "needed"),
    [("100.00", "100.00", False), ("100.01", "100.00", True), ("0.00", "0.00", False), ("0.01", "0.00", True)],
)
def test_at_or_under_the_limit_applies_at_once_above_it_waits(amount: str, limit: str, needed: bool) -> None:
    assert needs_approval(Decimal(amount), Decimal(limit)) is needed


def test_someone_else_may_decide_a_pending_request() -> None:
    check_decision(approval(), "Bill Manager")


def test_the_requester_may_not_decide_their_own_request() -> None:
    with pytest.raises(Forbidden) as refused:
        check_decision(approval(requested_by="Bill Manager"), "Bill Manager")
    assert refused.value.code == "own_request"


@pytest.mark.parametrize("status", [ApprovalStatus.APPROVED, ApprovalStatus.REJECTED])
def test_a_decided_request_is_never_decided_again(status: ApprovalStatus) -> None:
    with pytest.raises(Conflict) as refused:
        check_decision(approval(status=status), "Bill Manager")
    assert refused.value.code == "already_decided"
