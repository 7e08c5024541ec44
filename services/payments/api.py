"""Payments' staff HTTP routes: parse the request, check the role, call a command or a query, shape the view."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from functools import partial
from typing import Annotated, Any

import stripe
from fastapi import APIRouter, Body, Header, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, BeforeValidator, Field

from services.payments import (
    adjustments,
    commands,
    counter,
    decisions,
    disputes,
    domain,
    intents,
    queries,
    setting_changes,
    views,
)
from shared.auth import Actor, Role, require_account, require_roles
from shared.contracts.events import PaymentType
from shared.direct import DirectTransaction
from shared.export import OPENAPI_RESPONSES, ExportFormat, export_response
from shared.money import parse_amount
from shared.service import Service

COUNTER_STAFF = (Role.CUSTOMER_EXECUTIVE, Role.RECOVERY_EXECUTIVE)
ANY_STAFF = (*COUNTER_STAFF, Role.BILLING_MANAGER)
# Verifying an online payment is an approval: the billing manager's job (admin passes every check).
APPROVERS = (Role.BILLING_MANAGER,)


def _plain_decimal(value: Any) -> Any:
    # JSON numbers arrive as floats and lose cents; exponents and separators are typing mistakes at a counter.
    if isinstance(value, float):
        raise ValueError('amounts are decimal strings, e.g. "145.50"')
    return parse_amount(value, "USD") if isinstance(value, str) else value


Amount = Annotated[Decimal, BeforeValidator(_plain_decimal), Field(gt=0, decimal_places=2, max_digits=12)]


class RecordPaymentRequest(BaseModel):
    account_number: str = Field(min_length=1, max_length=50, examples=["WU-10001"])
    payment_type: PaymentType
    item_reference: str = Field(min_length=1, max_length=100, examples=["INV-2025-001234"])
    channel: str | None = Field(default=None, max_length=50, description="Defaults to the configured default.")
    method: str = Field(min_length=1, max_length=50, examples=["Cash"])
    amount: Amount = Field(examples=["145.50"])
    payment_date: date
    cash_received: Amount | None = None
    notes: str | None = Field(default=None, max_length=500)


class PaymentIntentRequest(BaseModel):
    payment_type: PaymentType
    item_reference: str = Field(min_length=1, max_length=100, examples=["INV-2025-001234"])


class AdjustmentRequest(BaseModel):
    kind: domain.AdjustmentKind = Field(description="`move` to another item of the account, or correct the `amount`.")
    reason: str = Field(min_length=1, max_length=500, examples=["Recorded against the wrong bill"])
    payment_type: PaymentType | None = Field(default=None, description="For a move: the item's type.")
    item_reference: str | None = Field(default=None, max_length=100, description="For a move: the item.")
    amount: Amount | None = Field(default=None, description="For a correction: the amount really paid.")


class AttachmentBody(BaseModel):
    filename: str = Field(min_length=1, max_length=200, examples=["bank-letter.pdf"])
    content_type: str = Field(default="application/octet-stream", max_length=100, examples=["application/pdf"])
    content_base64: str = Field(min_length=1, description="The file's bytes, base64 (kept in Postgres).")

    def attachment(self) -> disputes.Attachment:
        return disputes.Attachment.from_base64(self.filename, self.content_type, self.content_base64)


class DisputeRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=500, examples=["Customer says the cheque was never cashed"])
    evidence_notes: str | None = Field(default=None, max_length=5000)
    attachments: list[AttachmentBody] = Field(default_factory=list, max_length=disputes.MAX_ATTACHMENTS)


class EvidenceRequest(BaseModel):
    evidence_notes: str | None = Field(default=None, max_length=5000)
    attachments: list[AttachmentBody] = Field(default_factory=list, max_length=disputes.MAX_ATTACHMENTS)


class CloseDisputeRequest(BaseModel):
    outcome: domain.DisputeOutcome


class DecisionRequest(BaseModel):
    reason: str | None = Field(default=None, max_length=500)


class CancelRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


class ChoicesRequest(BaseModel):
    values: list[str] = Field(min_length=1, max_length=50)


class ThresholdRequest(BaseModel):
    amount: Decimal = Field(ge=0, decimal_places=2, max_digits=12)


RECEIPT_FORMAT_EXAMPLE = {"receipt_number": {"prefix": "R-", "with_year": False, "padding": 4, "start": 5001}}


class NumberFormatRequest(BaseModel):
    prefix: str
    with_year: bool
    padding: int
    start: int


def router(service: Service, gateway: stripe.StripeClient) -> APIRouter:
    """The routes, each opening its own unit of work on the service's sessions (the counter's payments on a direct
    transaction, `counter.py`); `gateway` is the Stripe API."""
    routes = APIRouter()
    # The relay is woken after each counter payment's commit, as after a session's.
    counter_transaction = partial(
        DirectTransaction, service.engine, service.tables.outbox, after_commit=service.relay.wake
    )

    async def detail(payment_id_or_receipt: str) -> dict[str, Any]:
        async with service.sessions() as session:
            row = await queries.payment_with_context(session, payment_id_or_receipt)
            extra = await queries.payment_money_safety(session, row.payment_id, row.receipt_number)
        return views.payment_detail(row, datetime.now(UTC), extra)

    # --- consumers: the utility's customers ---

    @routes.get("/consumers", tags=["consumers"])
    async def search_consumers(
        actor: Annotated[Actor, require_roles(*ANY_STAFF)],
        q: Annotated[str, Query(min_length=2, max_length=100, description="Name or account number, any part.")],
        limit: Annotated[int, Query(ge=1, le=50)] = 20,
    ) -> dict[str, Any]:
        async with service.sessions() as session:
            return {"consumers": await queries.search_consumers(session, q, limit)}

    @routes.get("/consumers/{account_number}", tags=["consumers"])
    async def consumer_details(
        account_number: str, actor: Annotated[Actor, require_roles(*ANY_STAFF)]
    ) -> dict[str, Any]:
        async with service.sessions() as session, session.begin():
            account, items = await queries.account_with_items(session, account_number)
            history = await queries.recent_payments(session, account_number)
            credit = await queries.available_credit(session, account_number)
            await commands.track(session, "payment_history_viewed", actor.name, account_number)
        return views.consumer_view(account, items, history, credit)

    # --- one account: staff as for consumer details, a customer for their own account only (else 404) ---

    @routes.get("/accounts/{account_number}", tags=["self-service"])
    async def account_summary(
        account_number: str, actor: Annotated[Actor, require_account(*ANY_STAFF)]
    ) -> dict[str, Any]:
        async with service.sessions() as session:
            account, items = await queries.account_with_items(session, account_number)
        return views.account_view(account, items)

    @routes.get("/accounts/{account_number}/payments", tags=["self-service"])
    async def account_payments(
        account_number: str,
        actor: Annotated[Actor, require_account(*ANY_STAFF)],
        limit: Annotated[int, Query(ge=1, le=domain.MAX_PAGE)] = 20,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        async with service.sessions() as session, session.begin():
            rows, next_cursor = await queries.account_payments(session, account_number, limit=limit, cursor=cursor)
            await commands.track(session, "payment_history_viewed", actor.name, account_number)
        return {"payments": [views.account_payment_row(r) for r in rows], "next_cursor": next_cursor}

    @routes.post("/accounts/{account_number}/payment-intents", status_code=201, tags=["self-service"])
    async def start_online_payment(
        account_number: str,
        body: PaymentIntentRequest,
        actor: Annotated[Actor, require_account(*ANY_STAFF)],
        idempotency_key: Annotated[str, Header(min_length=8, max_length=200)],
    ) -> dict[str, Any]:
        """A Stripe PaymentIntent for the item's outstanding amount; the payment arrives through the webhook."""
        async with service.sessions() as session, session.begin():
            await queries.known_account(session, account_number)
            intent = await intents.start_payment(
                session,
                gateway,
                account_number=account_number,
                payment_type=body.payment_type,
                item_reference=body.item_reference,
                key=idempotency_key,
            )
        return views.intent_created(intent)

    @routes.get("/accounts/{account_number}/payment-intents/{payment_intent_id}", tags=["self-service"])
    async def online_payment_status(
        account_number: str, payment_intent_id: str, actor: Annotated[Actor, require_account(*ANY_STAFF)]
    ) -> dict[str, Any]:
        async with service.sessions() as session:
            await queries.known_account(session, account_number)
            payment = await intents.follow_payment(
                session, gateway, account_number=account_number, payment_intent_id=payment_intent_id
            )
        return views.intent_status(payment_intent_id, payment)

    # --- payments ---

    @routes.post("/payments", status_code=201, tags=["payments"])
    async def record_payment(
        body: RecordPaymentRequest,
        actor: Annotated[Actor, require_roles(*COUNTER_STAFF)],
        idempotency_key: Annotated[str, Header(min_length=8, max_length=200)],
    ) -> dict[str, Any]:
        command = commands.RecordPayment(**body.model_dump())
        async with counter_transaction() as tx:
            recorded = await counter.record_payment(
                tx, command, received_by=actor.name, idempotency_key=idempotency_key
            )
        if recorded.posted is not None:
            # Posted just now: its row is what was written, with no credit notes, disputes or adjustments yet.
            return views.payment_detail(recorded.posted, datetime.now(UTC), queries.NO_MONEY_SAFETY)
        return await detail(recorded.payment_id)

    @routes.post("/payments/preview", tags=["payments"])
    async def preview_payment(
        body: RecordPaymentRequest, actor: Annotated[Actor, require_roles(*COUNTER_STAFF)]
    ) -> dict[str, Any]:
        """What `POST /payments` would record for this body (analysis, change) and what it would refuse; writes
        nothing."""
        async with service.sessions() as session:
            currency, assessment = await queries.preview_payment(
                session, **body.model_dump(exclude={"payment_date", "notes"})
            )
        return views.preview_view(assessment, currency)

    @routes.get("/payments", tags=["payments"])
    async def list_payments(
        actor: Annotated[Actor, require_roles(*ANY_STAFF)],
        q: Annotated[str | None, Query(max_length=100, description="Consumer name, receipt number or id.")] = None,
        date_from: date | None = None,
        date_to: date | None = None,
        method: str | None = None,
        status: str | None = None,
        payment_type: Annotated[PaymentType | None, Query(alias="type")] = None,
        sort: str = "-date",
        limit: Annotated[int, Query(ge=1, le=domain.MAX_PAGE)] = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        query = domain.PaymentQuery(
            q=q,
            date_from=date_from,
            date_to=date_to,
            method=method,
            status=status,
            payment_type=payment_type,
            sort=sort,
            limit=limit,
            cursor=cursor,
        )
        async with service.sessions() as session:
            rows, next_cursor = await queries.list_payments(session, query)
        return {"payments": [views.payment_row(r) for r in rows], "next_cursor": next_cursor}

    @routes.get("/payments/export", tags=["payments"], responses=OPENAPI_RESPONSES)
    async def export_payments(
        actor: Annotated[Actor, require_roles(Role.BILLING_MANAGER)],
        export_format: Annotated[ExportFormat, Query(alias="format")] = "csv",
        q: Annotated[str | None, Query(max_length=100)] = None,
        date_from: date | None = None,
        date_to: date | None = None,
        method: str | None = None,
        status: str | None = None,
        payment_type: Annotated[PaymentType | None, Query(alias="type")] = None,
        sort: str = "-date",
    ) -> StreamingResponse:
        query = domain.PaymentQuery(
            q=q,
            date_from=date_from,
            date_to=date_to,
            method=method,
            status=status,
            payment_type=payment_type,
            sort=sort,
        )
        async with service.sessions() as session, session.begin():
            await commands.track(session, "report_generated", actor.name, "payments", export_format=export_format)
        rows = (views.export_cells(row) async for row in queries.stream_payments(service.sessions, query))
        return await export_response("payments", export_format, views.EXPORT_COLUMNS, rows, sheet_title="Payments")

    @routes.get("/payments/{payment_id_or_receipt}", tags=["payments"])
    async def get_payment(
        payment_id_or_receipt: str, actor: Annotated[Actor, require_roles(*ANY_STAFF)]
    ) -> dict[str, Any]:
        return await detail(payment_id_or_receipt)

    @routes.post("/payments/{payment_id_or_receipt}/verify", tags=["payments"])
    async def verify_payment(
        payment_id_or_receipt: str, actor: Annotated[Actor, require_roles(*APPROVERS)]
    ) -> dict[str, Any]:
        async with service.sessions() as session, session.begin():
            payment_id = await decisions.verify_payment(session, payment_id_or_receipt, verified_by=actor.name)
        return await detail(payment_id)

    @routes.post("/payments/{payment_id_or_receipt}/cancel", tags=["payments"])
    async def cancel_payment(
        payment_id_or_receipt: str, body: CancelRequest, actor: Annotated[Actor, require_roles(Role.ADMIN)]
    ) -> dict[str, Any]:
        async with service.sessions() as session, session.begin():
            payment_id = await decisions.cancel_payment(
                session, payment_id_or_receipt, reason=body.reason, cancelled_by=actor.name
            )
        return await detail(payment_id)

    # --- money safety: adjustments (maker-checker), disputes ---

    @routes.post("/payments/{payment_id_or_receipt}/adjustments", status_code=201, tags=["adjustments"])
    async def adjust_payment(
        payment_id_or_receipt: str,
        body: AdjustmentRequest,
        response: Response,
        actor: Annotated[Actor, require_roles(*ANY_STAFF)],
        idempotency_key: Annotated[str, Header(min_length=8, max_length=200)],
    ) -> dict[str, Any]:
        """Move a payment to another item or correct its amount; above the limit it waits for approval (202)."""
        command = adjustments.AdjustPayment(**body.model_dump())
        async with service.sessions() as session, session.begin():
            adjustment_id = await adjustments.request_adjustment(
                session, payment_id_or_receipt, command, requested_by=actor.name, key=idempotency_key
            )
            state = await queries.find_adjustment(session, adjustment_id)
            row = await queries.payment_with_context(session, state.payment_id)
            extra = await queries.payment_money_safety(session, row.payment_id, row.receipt_number)
        if state.status != adjustments.APPLIED:
            response.status_code = 202
        return {
            "adjustment": views.adjustment_view(state),
            "payment": views.payment_detail(row, datetime.now(UTC), extra),
        }

    @routes.post("/payments/{payment_id_or_receipt}/disputes", status_code=201, tags=["disputes"])
    async def open_dispute(
        payment_id_or_receipt: str, body: DisputeRequest, actor: Annotated[Actor, require_roles(*ANY_STAFF)]
    ) -> dict[str, Any]:
        """Staff open a dispute on a posted payment, with evidence notes and files: Open until it is decided."""
        files = [a.attachment() for a in body.attachments]
        async with service.sessions() as session, session.begin():
            payment = await commands.find_for_update(session, payment_id_or_receipt)
            dispute_id = await disputes.open_dispute(
                session,
                payment,
                reason=body.reason,
                opened_by=actor.name,
                source="staff",
                evidence_notes=body.evidence_notes,
                attachments=files,
            )
        return await dispute_detail(dispute_id)

    async def dispute_detail(dispute_id: str) -> dict[str, Any]:
        async with service.sessions() as session:
            dispute = await queries.find_dispute(session, dispute_id)
            extra = await queries.payment_money_safety(session, dispute.payment_id, "")
        files = [a for a in extra["attachments"] if a.dispute_id == dispute_id]
        return views.dispute_view(dispute, files)

    @routes.get("/disputes/{dispute_id}", tags=["disputes"])
    async def get_dispute(dispute_id: str, actor: Annotated[Actor, require_roles(*ANY_STAFF)]) -> dict[str, Any]:
        return await dispute_detail(dispute_id)

    @routes.post("/disputes/{dispute_id}/review", tags=["disputes"])
    async def review_dispute(
        dispute_id: str, body: EvidenceRequest, actor: Annotated[Actor, require_roles(*ANY_STAFF)]
    ) -> dict[str, Any]:
        """Evidence submitted: Open -> Under review."""
        files = [a.attachment() for a in body.attachments]
        async with service.sessions() as session, session.begin():
            dispute = await disputes.locked_dispute(session, dispute_id)
            await disputes.review_dispute(
                session, dispute, actor=actor.name, evidence_notes=body.evidence_notes, attachments=files
            )
        return await dispute_detail(dispute_id)

    @routes.post("/disputes/{dispute_id}/close", tags=["disputes"])
    async def close_dispute(
        dispute_id: str, body: CloseDisputeRequest, actor: Annotated[Actor, require_roles(*ANY_STAFF)]
    ) -> dict[str, Any]:
        """Won: the payment counts as collected again. Lost: it is reversed like a refund (Charged back)."""
        async with service.sessions() as session, session.begin():
            dispute = await disputes.locked_dispute(session, dispute_id)
            await disputes.close_dispute(session, dispute, outcome=body.outcome, actor=actor.name)
        return await dispute_detail(dispute_id)

    @routes.get("/disputes/{dispute_id}/attachments/{attachment_id}", tags=["disputes"], response_class=Response)
    async def dispute_attachment(
        dispute_id: str, attachment_id: str, actor: Annotated[Actor, require_roles(*ANY_STAFF)]
    ) -> Response:
        async with service.sessions() as session:
            file = await queries.find_attachment(session, dispute_id, attachment_id)
        return Response(
            content=file.content,
            media_type=file.content_type,
            headers={"Content-Disposition": f'attachment; filename="{file.filename}"'},
        )

    # --- approvals: adjustments above the limit wait for a billing manager (never the requester) ---

    @routes.get("/approvals", tags=["approvals"])
    async def pending_approvals(actor: Annotated[Actor, require_roles(*APPROVERS)]) -> dict[str, Any]:
        async with service.sessions() as session:
            waiting = await queries.pending_approvals(session)
        return {"approvals": [a.as_json() for a in waiting]}

    async def decide(approval_id: str, actor: Actor, approve: bool, body: DecisionRequest | None) -> dict[str, Any]:
        async with service.sessions() as session, session.begin():
            decided = await adjustments.decide_adjustment(
                session, approval_id, approver=actor.name, approve=approve, reason=body.reason if body else None
            )
        return {"approval": decided.as_json(), "payment": await detail(decided.subject)}

    @routes.post("/approvals/{approval_id}/approve", tags=["approvals"])
    async def approve(
        approval_id: str, actor: Annotated[Actor, require_roles(*APPROVERS)], body: DecisionRequest | None = None
    ) -> dict[str, Any]:
        return await decide(approval_id, actor, True, body)

    @routes.post("/approvals/{approval_id}/reject", tags=["approvals"])
    async def reject(
        approval_id: str, actor: Annotated[Actor, require_roles(*APPROVERS)], body: DecisionRequest | None = None
    ) -> dict[str, Any]:
        return await decide(approval_id, actor, False, body)

    # --- settings: everyone at the counter reads them, only an admin changes them ---

    async def current_settings() -> dict[str, Any]:
        async with service.sessions() as session:
            return views.settings_view(await queries.load_settings(session))

    @routes.get("/settings", tags=["settings"])
    async def get_settings(actor: Annotated[Actor, require_roles(*ANY_STAFF)]) -> dict[str, Any]:
        return await current_settings()

    @routes.get("/settings/channels", tags=["settings"])
    async def get_channels(actor: Annotated[Actor, require_roles(*ANY_STAFF)]) -> dict[str, Any]:
        view = await current_settings()
        return {"channels": view["channels"], "default_channel": view["default_channel"]}

    @routes.put("/settings/channels", tags=["settings"])
    async def put_channels(body: ChoicesRequest, actor: Annotated[Actor, require_roles(Role.ADMIN)]) -> dict[str, Any]:
        async with service.sessions() as session, session.begin():
            changed = await setting_changes.change_choices(session, "channels", body.values, actor.name)
        return views.settings_view(changed)

    @routes.get("/settings/payment-methods", tags=["settings"])
    async def get_methods(actor: Annotated[Actor, require_roles(*ANY_STAFF)]) -> dict[str, Any]:
        return {"payment_methods": (await current_settings())["payment_methods"]}

    @routes.put("/settings/payment-methods", tags=["settings"])
    async def put_methods(body: ChoicesRequest, actor: Annotated[Actor, require_roles(Role.ADMIN)]) -> dict[str, Any]:
        async with service.sessions() as session, session.begin():
            changed = await setting_changes.change_choices(session, "payment_methods", body.values, actor.name)
        return views.settings_view(changed)

    @routes.get("/settings/overpayment-threshold", tags=["settings"])
    async def get_threshold(actor: Annotated[Actor, require_roles(*ANY_STAFF)]) -> dict[str, Any]:
        return {"overpayment_threshold": (await current_settings())["overpayment_threshold"]}

    @routes.put("/settings/overpayment-threshold", tags=["settings"])
    async def put_threshold(
        body: ThresholdRequest, actor: Annotated[Actor, require_roles(Role.ADMIN)]
    ) -> dict[str, Any]:
        async with service.sessions() as session, session.begin():
            changed = await setting_changes.change_overpayment_threshold(session, body.amount, actor.name)
        return views.settings_view(changed)

    @routes.put("/settings/adjustment-approval-limit", tags=["settings"])
    async def put_adjustment_limit(
        body: ThresholdRequest, actor: Annotated[Actor, require_roles(Role.ADMIN)]
    ) -> dict[str, Any]:
        """Adjustments moving more than this wait for a billing manager's approval."""
        async with service.sessions() as session, session.begin():
            changed = await setting_changes.save_setting(
                session, "adjustment_approval_limit", f"{body.amount:.2f}", actor.name
            )
        return views.settings_view(changed)

    @routes.get("/settings/number-formats", tags=["settings"])
    async def get_formats(actor: Annotated[Actor, require_roles(*ANY_STAFF)]) -> dict[str, Any]:
        return {"number_formats": (await current_settings())["number_formats"]}

    @routes.put("/settings/number-formats", tags=["settings"])
    async def put_formats(
        body: Annotated[dict[str, NumberFormatRequest], Body(examples=[RECEIPT_FORMAT_EXAMPLE])],
        actor: Annotated[Actor, require_roles(Role.ADMIN)],
    ) -> dict[str, Any]:
        requested = {kind: domain.NumberFormat(**fmt.model_dump()) for kind, fmt in body.items()}
        async with service.sessions() as session, session.begin():
            changed = await setting_changes.change_number_formats(session, requested, actor.name)
        return views.settings_view(changed)

    return routes
