"""Credit notes' HTTP routes: parse, authorize, call a command or a query, shape the answer with `views`."""

# No `from __future__ import annotations` here: the routes' annotations use the filters dependency made in
# `router()` (it knows the utility's time zone), which FastAPI sees only if annotations are evaluated in place.

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.credit_notes import commands, domain, queries, reversals, views
from services.credit_notes.queries import CreditNoteFilters
from shared.auth import Actor, Role, require_account, require_roles
from shared.contracts.events import PaymentType
from shared.errors import Rejected
from shared.export import OPENAPI_RESPONSES, ExportFormat, export_response

STAFF = (Role.CUSTOMER_EXECUTIVE, Role.RECOVERY_EXECUTIVE, Role.BILLING_MANAGER)
Staff = Annotated[Actor, require_roles(*STAFF)]
# Routes about one account: staff read any, a customer only their own (any other answers 404, never 403).
AccountReader = Annotated[Actor, require_account(*STAFF)]
Admin = Annotated[Actor, require_roles(Role.ADMIN)]
# Approving credit notes and paying credit back are the billing manager's (admin passes every check).
Manager = Annotated[Actor, require_roles(Role.BILLING_MANAGER)]
IdempotencyKey = Annotated[str, Header(min_length=8, max_length=200)]


class IssueRequest(BaseModel):
    receipt_number: str = Field(min_length=1, max_length=40, examples=["R-5001"])
    amount: Decimal | None = Field(
        default=None,
        gt=0,
        decimal_places=2,
        max_digits=12,
        description="Defaults to the full payment amount (less credit already issued against it).",
        examples=["4.50"],
    )
    reason: str = Field(min_length=1, max_length=domain.REASON_MAX_LENGTH, examples=["Overpayment"])
    remarks: str | None = Field(default=None, max_length=domain.REMARKS_MAX_LENGTH)


class ApplyRequest(BaseModel):
    payment_type: PaymentType
    item_reference: str = Field(min_length=1, max_length=100, examples=["INV-2025-001567"])
    amount: Decimal | None = Field(
        default=None,
        gt=0,
        decimal_places=2,
        max_digits=12,
        description="Defaults to as much as the remaining credit and the item's outstanding amount allow.",
    )


class DecisionRequest(BaseModel):
    reason: str | None = Field(default=None, max_length=500)


class RefundRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=500, examples=["Customer moved away"])


def _stripped(value: str | None) -> str | None:
    return value.strip() if value and value.strip() else None


class ListFilters:
    """The search and filters of the credit-notes tab, from the query string; dates in the utility's zone."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone

    async def __call__(
        self,
        q: Annotated[str | None, Query(max_length=100, description="Number, consumer, account or receipt.")] = None,
        status: Annotated[str | None, Query(description="All, Active, Applied or Expired.")] = None,
        created: domain.CreatedWithin | None = None,
        created_from: date | None = None,
        created_to: date | None = None,
        reason: Annotated[list[str] | None, Query(description="One or more reasons.")] = None,
        consumer: Annotated[str | None, Query(max_length=100)] = None,
        remaining: domain.RemainingFilter | None = None,
        receipt_number: Annotated[str | None, Query(max_length=40)] = None,
        amount_min: Annotated[Decimal | None, Query(ge=0, max_digits=14, decimal_places=2)] = None,
        amount_max: Annotated[Decimal | None, Query(ge=0, max_digits=14, decimal_places=2)] = None,
        order: Annotated[Literal["newest", "oldest"], Query(description="By created date.")] = "newest",
    ) -> CreditNoteFilters:
        chosen_status: domain.Status | None = None
        if status and status.casefold() != "all":
            by_name = {s.value.casefold(): s for s in domain.Status}
            if status.casefold() not in by_name:
                raise Rejected("unknown_status", "status is one of All, Active, Applied, Expired", field="status")
            chosen_status = by_name[status.casefold()]
        start = end = None
        if created is None and (created_from or created_to):
            created = domain.CreatedWithin.CUSTOM
        if created is not None:
            start, end = domain.created_range(
                created, now=datetime.now(UTC), zone=self.zone, date_from=created_from, date_to=created_to
            )
        domain.validate_amount_range(amount_min, amount_max)
        return CreditNoteFilters(
            text=_stripped(q),
            status=chosen_status,
            created_from=start,
            created_before=end,
            reasons=tuple(reason or ()),
            consumer=_stripped(consumer),
            remaining=remaining,
            receipt_number=_stripped(receipt_number),
            amount_min=amount_min,
            amount_max=amount_max,
            newest_first=order == "newest",
        )


def router(
    sessions: async_sessionmaker[AsyncSession], *, number_format: domain.NumberFormat, zone: ZoneInfo
) -> APIRouter:
    """The credit-notes tab, its create form, details, export, and the credit-note settings."""
    routes = APIRouter(tags=["credit notes"])
    list_filters = ListFilters(zone)

    @routes.post("/credit-notes", status_code=201)
    async def issue(body: IssueRequest, actor: Staff, idempotency_key: IdempotencyKey) -> dict[str, Any]:
        command = commands.IssueCreditNote(**body.model_dump())
        async with sessions() as session, session.begin():
            number = await commands.issue_credit_note(
                session, command, created_by=actor.name, idempotency_key=idempotency_key, number_format=number_format
            )
        async with sessions() as session:
            note = await queries.find_credit_note(session, number)
            summary = await queries.creation_summary(session, number)
        return views.issued_view(note, summary)

    @routes.get("/credit-notes")
    async def search(
        actor: Staff,
        filters: Annotated[CreditNoteFilters, Depends(list_filters)],
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> dict[str, Any]:
        async with sessions() as session:
            page, next_cursor = await queries.search_credit_notes(session, filters, limit=limit, cursor=cursor)
        return {"items": [views.row_view(r, zone) for r in page], "next_cursor": next_cursor}

    @routes.get("/credit-notes/export", responses=OPENAPI_RESPONSES)
    async def export(
        actor: Staff,
        filters: Annotated[CreditNoteFilters, Depends(list_filters)],
        format: ExportFormat = "csv",
    ) -> StreamingResponse:
        lines = (views.export_line(row, zone) async for row in queries.iter_credit_notes(sessions, filters))
        return await export_response("credit-notes", format, views.EXPORT_COLUMNS, lines, sheet_title="Credit notes")

    @routes.get("/credit-notes/payments/{receipt_number}")
    async def payment_for_credit(receipt_number: str, actor: Staff) -> dict[str, Any]:
        """The read-only payment block of the create form, with the maximum credit it still allows."""
        async with sessions() as session:
            payment = await queries.find_payment(session, receipt_number)
            policy = await queries.load_policy(session)
        return views.payment_for_credit_view(payment, policy)

    @routes.get("/credit-notes/{number}")
    async def details(number: str, actor: Staff) -> dict[str, Any]:
        async with sessions() as session:
            return views.detail_view(await queries.credit_note_details(session, number))

    @routes.get("/credit-notes/{number}/history")
    async def audit_trail(number: str, actor: Staff) -> list[dict[str, Any]]:
        async with sessions() as session:
            await queries.find_credit_note(session, number)
            entries = await queries.history(session, number)
        return views.history_view(entries)

    @routes.post("/credit-notes/{number}/apply")
    async def apply(number: str, body: ApplyRequest, actor: Staff, idempotency_key: IdempotencyKey) -> dict[str, Any]:
        command = commands.ApplyCreditNote(credit_note_number=number, **body.model_dump())
        async with sessions() as session, session.begin():
            application_id = await commands.apply_credit_note(
                session, command, applied_by=actor.name, idempotency_key=idempotency_key
            )
        async with sessions() as session:
            note = await queries.credit_note_details(session, number)
        return views.applied_view(note, application_id)

    @routes.post("/credit-notes/{number}/refund")
    async def refund(number: str, body: RefundRequest, actor: Manager) -> dict[str, Any]:
        """Pay a credit's unused balance back to the customer (`credit_note.refund_requested`)."""
        async with sessions() as session, session.begin():
            await reversals.refund_credit_note(session, number, reason=body.reason, requested_by=actor.name)
        async with sessions() as session:
            return views.detail_view(await queries.credit_note_details(session, number))

    @routes.get("/accounts/{account_number}/credit-notes", tags=["self-service"])
    async def account_credit_notes(
        account_number: str,
        actor: AccountReader,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> dict[str, Any]:
        """The account's credit notes, newest first, with what remains of each and when it expires."""
        filters = CreditNoteFilters(account_number=account_number)
        async with sessions() as session:
            page, next_cursor = await queries.search_credit_notes(session, filters, limit=limit, cursor=cursor)
        return {"items": [views.account_row_view(r) for r in page], "next_cursor": next_cursor}

    @routes.get("/approvals", tags=["approvals"])
    async def pending(actor: Manager) -> dict[str, Any]:
        """Manual credit notes above the approval limit, waiting for a decision, oldest first."""
        async with sessions() as session:
            waiting = await queries.pending_approvals(session)
        return {"approvals": [a.as_json() for a in waiting]}

    @routes.post("/approvals/{approval_id}/approve", tags=["approvals"])
    async def approve(approval_id: str, actor: Manager, body: DecisionRequest | None = None) -> dict[str, Any]:
        return await _decide(approval_id, actor, approve=True, reason=body.reason if body else None)

    @routes.post("/approvals/{approval_id}/reject", tags=["approvals"])
    async def reject(approval_id: str, actor: Manager, body: DecisionRequest | None = None) -> dict[str, Any]:
        return await _decide(approval_id, actor, approve=False, reason=body.reason if body else None)

    async def _decide(approval_id: str, actor: Actor, *, approve: bool, reason: str | None) -> dict[str, Any]:
        async with sessions() as session, session.begin():
            decided = await commands.decide_credit_note(
                session, approval_id, approver=actor.name, approve=approve, reason=reason
            )
        async with sessions() as session:
            note = await queries.credit_note_details(session, decided.subject)
        return {"approval": decided.as_json(), "credit_note": views.detail_view(note)}

    @routes.get("/settings/credit-notes", tags=["settings"])
    async def get_settings(actor: Staff) -> views.PolicyBody:
        async with sessions() as session:
            return views.policy_view(await queries.load_policy(session))

    @routes.get("/settings/credit-notes/history", tags=["settings"])
    async def settings_history(actor: Admin) -> list[dict[str, Any]]:
        async with sessions() as session:
            entries = await queries.history(session, queries.POLICY)
        return views.history_view(entries)

    @routes.put("/settings/credit-notes", tags=["settings"])
    async def put_settings(body: views.PolicyBody, actor: Admin) -> views.PolicyBody:
        async with sessions() as session:
            current = await queries.load_policy(session)
        policy = domain.Policy(
            expiry=domain.ExpiryPeriod(count=body.expiry.count, unit=body.expiry.unit),
            reasons=tuple(body.reasons),
            approval_limit=body.approval_limit if body.approval_limit is not None else current.approval_limit,
            auto_apply_credit=body.auto_apply_credit or current.auto_apply_credit,
        )
        async with sessions() as session, session.begin():
            await commands.update_policy(session, policy, actor=actor.name)
        return views.policy_view(policy)

    return routes
