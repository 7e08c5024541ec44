"""The payments service: HTTP routes for staff and the consumers of billing's events."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Header
from pydantic import BaseModel, Field

from services.payments import handlers
from services.payments.settings import PaymentsSettings
from services.payments.storage import plumbing
from shared.auth import Actor, Role, require_roles
from shared.contracts import Topic
from shared.contracts.events import PaymentType
from shared.service import Service

COUNTER_STAFF = (Role.CUSTOMER_EXECUTIVE, Role.RECOVERY_EXECUTIVE)
ANY_STAFF = (*COUNTER_STAFF, Role.BILLING_MANAGER)


class RecordPaymentRequest(BaseModel):
    account_number: str = Field(min_length=1, max_length=50, examples=["WU-10001"])
    payment_type: PaymentType
    item_reference: str = Field(min_length=1, max_length=100, examples=["INV-2025-001234"])
    channel: str = Field(default="Walk-in", min_length=1, max_length=50)
    method: str = Field(min_length=1, max_length=50, examples=["Cash"])
    amount: Decimal = Field(gt=0, decimal_places=2, max_digits=12, examples=["145.50"])
    payment_date: date
    cash_received: Decimal | None = Field(default=None, gt=0, decimal_places=2, max_digits=12)
    notes: str | None = Field(default=None, max_length=500)


class PaymentView(BaseModel):
    payment_id: str
    transaction_id: str
    receipt_number: str
    status: str
    verification: str
    processing_time: str
    amount: str
    currency: str
    change_given: str | None
    received_by: str
    analysis: dict[str, str]


def _view(row: dict[str, Any]) -> PaymentView:
    paid, due = row["amount"], row["due"]
    return PaymentView(
        payment_id=row["payment_id"],
        transaction_id=row["transaction_id"],
        receipt_number=row["receipt_number"],
        status=row["status"],
        verification=row["verification"],
        processing_time="Immediate",
        amount=str(paid),
        currency=row["currency"],
        change_given=str(row["change_given"]) if row["change_given"] is not None else None,
        received_by=row["received_by"],
        analysis={"due": str(due), "paid": str(paid), "difference": str(paid - due), "outcome": row["outcome"]},
    )


def create_service(settings: PaymentsSettings | None = None) -> Service:
    settings = settings or PaymentsSettings()
    service = Service(settings, plumbing, title="Paydesk payments")
    service.consume("billing", Topic.BILLING_RECEIVABLES, handlers.BILLING_HANDLERS)
    service.publishes(Topic.PAYMENTS_EVENTS, ["payment.posted", "payment.overpaid"])

    router = APIRouter(tags=["payments"])

    @router.post("/payments", status_code=201)
    async def record_payment(
        body: RecordPaymentRequest,
        actor: Annotated[Actor, require_roles(*COUNTER_STAFF)],
        idempotency_key: Annotated[str, Header(min_length=8, max_length=200)],
    ) -> PaymentView:
        command = handlers.RecordPayment(**body.model_dump())
        async with service.sessions() as session, session.begin():
            payment_id = await handlers.record_payment(
                session, service.stage, command, received_by=actor.name, idempotency_key=idempotency_key
            )
        service.relay.wake()
        async with service.sessions() as session:
            return _view(await handlers.find_payment(session, payment_id))

    @router.get("/payments/{payment_id_or_receipt}")
    async def get_payment(
        payment_id_or_receipt: str, actor: Annotated[Actor, require_roles(*ANY_STAFF)]
    ) -> PaymentView:
        async with service.sessions() as session:
            return _view(await handlers.find_payment(session, payment_id_or_receipt))

    service.include(router)
    return service
