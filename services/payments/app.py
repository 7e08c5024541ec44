"""The payments service: staff HTTP routes, and consumers of billing, command, gateway and credit-note events."""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import xlsxwriter
from fastapi import APIRouter, Body, Header, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, BeforeValidator, Field
from sqlalchemy import Row

from services.payments import domain, handlers, storage
from services.payments.settings import PaymentsSettings
from services.payments.storage import plumbing
from shared.auth import Actor, Role, require_roles
from shared.contracts import Topic
from shared.contracts.events import PaymentType
from shared.errors import NotFound, Rejected
from shared.messaging import Subscription
from shared.money import format_money, parse_amount
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


# --- views: what staff see, amounts as decimal strings plus the rendered text ---


def _money(amount: Decimal | None, currency: str) -> dict[str, str] | None:
    if amount is None:
        return None
    return {"amount": f"{amount:.2f}", "currency": currency, "display": format_money(amount, currency)}


_OUTCOME_WORDS = {"exact": "Exact payment", "over": "Over paid", "under": "Under paid"}
_DUE_LABELS = {"bill": "Billed amount", "service": "Service amount", "installment": "Installment amount"}


def _item_details(row: Row[Any]) -> dict[str, Any]:
    if row.payment_type == PaymentType.BILL:
        return {"invoice_id": row.item_reference, "service_period": row.period_or_date}
    if row.payment_type == PaymentType.SERVICE:
        return {"service_name": row.item_description, "service_date": row.period_or_date}
    plan_id, _, number = row.item_reference.partition("/")
    return {"plan_id": plan_id, "installment_number": int(number), "due_date": row.period_or_date}


def payment_detail(row: Row[Any], now: datetime) -> dict[str, Any]:
    """The seed's payment details view; the `POST /payments` response is the same document."""
    analysis = domain.Analysis(due=row.due, paid=row.amount)
    currency = row.currency
    is_cash = row.method == "Cash" and row.cash_received is not None
    processing_time = domain.processing_time(
        online=row.online, started_at=row.recorded_at, settled_at=row.settled_at, now=now
    )
    return {
        # DESIGN's response fields, flat.
        "payment_id": row.payment_id,
        "transaction_id": row.transaction_id,
        "receipt_number": row.receipt_number,
        "status": row.status,
        "verification": row.verification,
        "processing_time": processing_time,
        "amount": f"{row.amount:.2f}",
        "currency": currency,
        "change_given": f"{row.change_given:.2f}" if row.change_given is not None else None,
        "received_by": row.received_by,
        "analysis": {
            "due": f"{analysis.due:.2f}",
            "paid": f"{analysis.paid:.2f}",
            "difference": f"{analysis.difference:.2f}",
            "outcome": analysis.outcome.value,
        },
        # The details view, section by section.
        "payment_information": {
            "payment_id": row.payment_id,
            "status": row.status,
            "amount_paid": _money(row.amount, currency),
            "payment_method": row.method,
            "payment_type": row.payment_type,
            "channel": row.channel,
            "webhook_status": row.webhook_status,
            "settlement_status": row.settlement_status,
        },
        "payment_details": {"payment_type": row.payment_type, **_item_details(row)},
        "amount_analysis": {
            "due_label": _DUE_LABELS[row.payment_type],
            "due": _money(analysis.due, currency),
            "paid": _money(analysis.paid, currency),
            "difference": _money(analysis.difference, currency),
            "outcome": _OUTCOME_WORDS[analysis.outcome],
        },
        "credit_note": (
            {"credit_note_number": row.credit_note_number, "amount": _money(row.credit_note_amount, currency)}
            if row.credit_note_number
            else None
        ),
        "cash": (
            {"amount_received": _money(row.cash_received, currency), "change_given": _money(row.change_given, currency)}
            if is_cash
            else None
        ),
        "transaction": {
            "transaction_id": row.transaction_id,
            "receipt_number": row.receipt_number,
            "payment_date": row.payment_date.isoformat(),
        },
        "processing": {
            "received_by": row.received_by,
            "processing_time": processing_time,
            "verification": row.verification,
            "verified_by": row.verified_by,
            "can_verify": row.online and row.verification == domain.Verification.PENDING,
        },
        "consumer": {
            "name": row.consumer_name,
            "account_number": row.account_number,
            "service_address": row.service_address,
            "phone": row.phone,
            "email": row.email,
        },
        "notes": row.notes,
        # What the counter offers next (AC 13-15): the receipt (receipts service), another payment, the dashboard
        # (kpi service).
        "links": {
            "self": f"/payments/{row.payment_id}",
            "receipt_print": f"/receipts/{row.receipt_number}",
            "receipt_pdf": f"/receipts/{row.receipt_number}.pdf",
            "record_another": "/payments",
            "dashboard": "/",
        },
        "cancellation": (
            {"reason": row.cancel_reason, "cancelled_by": row.cancelled_by, "cancelled_at": row.cancelled_at}
            if row.cancelled_at
            else None
        ),
    }


def payment_row(row: Row[Any]) -> dict[str, Any]:
    """One line of the payments table: Receipt #, Consumer, Amount, Method, Date, Type, Status."""
    return {
        "receipt_number": row.receipt_number,
        "payment_id": row.payment_id,
        "consumer": {"name": row.consumer_name, "account_number": row.account_number},
        "amount": _money(row.amount, row.currency),
        "method": row.method,
        "date": row.payment_date.isoformat(),
        "type": row.payment_type,
        "status": row.status,
        "links": {"details": f"/payments/{row.receipt_number}", "receipt": f"/receipts/{row.receipt_number}"},
    }


EXPORT_COLUMNS = ["Receipt #", "Payment ID", "Consumer", "Account", "Amount", "Currency", "Method", "Date", "Type"]
EXPORT_COLUMNS += ["Status", "Channel", "Received by"]


def _export_values(row: Row[Any]) -> list[str]:
    return [
        row.receipt_number,
        row.payment_id,
        row.consumer_name,
        row.account_number,
        f"{row.amount:.2f}",
        row.currency,
        row.method,
        row.payment_date.isoformat(),
        row.payment_type,
        row.status,
        row.channel,
        row.received_by,
    ]


def consumer_view(account: Row[Any], items: list[Row[Any]], history: list[Row[Any]]) -> dict[str, Any]:
    open_items = [i for i in items if i.outstanding > 0]
    open_total = sum((i.outstanding for i in open_items), Decimal(0))
    balance = domain.current_balance(account.reported_balance, account.collected_since_report, open_total)

    def item(i: Row[Any]) -> dict[str, Any]:
        return {
            "item_reference": i.item_reference,
            "description": i.description,
            "period_or_date": i.period_or_date,
            "due_date": i.due_date.isoformat(),
            "amount": _money(i.amount, i.currency),
            "outstanding": _money(i.outstanding, i.currency),
        }

    by_type = {t: [item(i) for i in open_items if i.payment_type == t] for t in PaymentType}
    return {
        "name": account.name,
        "account_number": account.account_number,
        "service_address": account.service_address,
        "phone": account.phone,
        "email": account.email,
        "current_balance": _money(balance, account.currency),
        "unpaid_bills": by_type[PaymentType.BILL],
        "unpaid_services": by_type[PaymentType.SERVICE],
        "unpaid_installments": by_type[PaymentType.INSTALLMENT],
        "payment_history": [payment_row(p) for p in history],
    }


def create_service(settings: PaymentsSettings | None = None) -> Service:
    settings = settings or PaymentsSettings()
    service = Service(settings, plumbing, title="Paydesk payments")
    service.subscribe(Subscription("billing", Topic.BILLING_RECEIVABLES, handlers.BILLING_HANDLERS))
    service.subscribe(
        Subscription("commands", Topic.PAYMENTS_COMMANDS, handlers.COMMAND_HANDLERS, handlers.on_command_rejected)
    )
    service.subscribe(Subscription("gateway", Topic.GATEWAY_EVENTS, handlers.GATEWAY_HANDLERS))
    service.subscribe(Subscription("credit_notes", Topic.CREDITNOTES_EVENTS, handlers.CREDIT_NOTE_HANDLERS))
    service.publishes(
        Topic.PAYMENTS_EVENTS,
        [
            "payment.posted",
            "payment.overpaid",
            "payment.status_changed",
            "payment.verified",
            "payment.cancelled",
            "payment.record_rejected",
        ],
    )
    service.publishes(Topic.ANALYTICS_EVENTS, ["usage.tracked"])

    async def detail(payment_id_or_receipt: str) -> dict[str, Any]:
        async with service.sessions() as session:
            row = await storage.payment_with_context(session, payment_id_or_receipt)
        if row is None:
            raise NotFound("payment_not_found", f"no payment {payment_id_or_receipt}")
        return payment_detail(row, datetime.now(UTC))

    router = APIRouter()

    # --- consumers ---

    @router.get("/consumers", tags=["consumers"])
    async def search_consumers(
        actor: Annotated[Actor, require_roles(*ANY_STAFF)],
        q: Annotated[str, Query(min_length=2, max_length=100, description="Name or account number, any part.")],
        limit: Annotated[int, Query(ge=1, le=50)] = 20,
    ) -> dict[str, Any]:
        async with service.sessions() as session:
            return {"consumers": await storage.search_consumers(session, q, limit)}

    @router.get("/consumers/{account_number}", tags=["consumers"])
    async def consumer_details(
        account_number: str, actor: Annotated[Actor, require_roles(*ANY_STAFF)]
    ) -> dict[str, Any]:
        async with service.sessions() as session, session.begin():
            found = await storage.account_with_items(session, account_number)
            if found is None:
                raise NotFound("unknown_account", f"no consumer with account {account_number}", field="account_number")
            history = await storage.recent_payments(session, account_number)
            await handlers.track(session, "payment_history_viewed", actor.name, account_number)
        return consumer_view(*found, history)

    # --- payments ---

    @router.post("/payments", status_code=201, tags=["payments"])
    async def record_payment(
        body: RecordPaymentRequest,
        actor: Annotated[Actor, require_roles(*COUNTER_STAFF)],
        idempotency_key: Annotated[str, Header(min_length=8, max_length=200)],
    ) -> dict[str, Any]:
        command = handlers.RecordPayment(**body.model_dump())
        async with service.sessions() as session, session.begin():
            payment_id = await handlers.record_payment(
                session, command, received_by=actor.name, idempotency_key=idempotency_key
            )
            # Read back in the same transaction: one connection per request, and the view is what was committed.
            row = await storage.payment_with_context(session, payment_id)
        assert row is not None
        return payment_detail(row, datetime.now(UTC))

    @router.get("/payments", tags=["payments"])
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
            cursor=domain.Cursor.decode(cursor) if cursor else None,
        )
        async with service.sessions() as session:
            rows, next_cursor = await storage.list_payments(session, query)
        return {
            "payments": [payment_row(r) for r in rows],
            "next_cursor": next_cursor.encode() if next_cursor else None,
        }

    @router.get("/payments/export", tags=["payments"])
    async def export_payments(
        actor: Annotated[Actor, require_roles(Role.BILLING_MANAGER)],
        export_format: Annotated[Literal["csv", "xlsx"], Query(alias="format")] = "csv",
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
            await handlers.track(session, "report_generated", actor.name, "payments", export_format=export_format)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        if export_format == "csv":
            return StreamingResponse(
                _csv_lines(service, query),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="payments-{stamp}.csv"'},
            )
        return StreamingResponse(
            _xlsx_bytes(service, query),
            media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            headers={"Content-Disposition": f'attachment; filename="payments-{stamp}.xlsx"'},
        )

    @router.get("/payments/{payment_id_or_receipt}", tags=["payments"])
    async def get_payment(
        payment_id_or_receipt: str, actor: Annotated[Actor, require_roles(*ANY_STAFF)]
    ) -> dict[str, Any]:
        return await detail(payment_id_or_receipt)

    @router.post("/payments/{payment_id_or_receipt}/verify", tags=["payments"])
    async def verify_payment(
        payment_id_or_receipt: str, actor: Annotated[Actor, require_roles(*APPROVERS)]
    ) -> dict[str, Any]:
        async with service.sessions() as session, session.begin():
            payment_id = await handlers.verify_payment(session, payment_id_or_receipt, verified_by=actor.name)
        return await detail(payment_id)

    @router.post("/payments/{payment_id_or_receipt}/cancel", tags=["payments"])
    async def cancel_payment(
        payment_id_or_receipt: str, body: CancelRequest, actor: Annotated[Actor, require_roles(Role.ADMIN)]
    ) -> dict[str, Any]:
        async with service.sessions() as session, session.begin():
            payment_id = await handlers.cancel_payment(
                session, payment_id_or_receipt, reason=body.reason, cancelled_by=actor.name
            )
        return await detail(payment_id)

    # --- settings: everyone at the counter reads them, only an admin changes them ---

    async def current_settings() -> dict[str, Any]:
        async with service.sessions() as session:
            return handlers.settings_view(await handlers.load_settings(session))

    async def change(key: str, value: Any, actor: Actor) -> dict[str, Any]:
        async with service.sessions() as session, session.begin():
            return handlers.settings_view(await handlers.save_setting(session, key, value, actor.name))

    @router.get("/settings", tags=["settings"])
    async def get_settings(actor: Annotated[Actor, require_roles(*ANY_STAFF)]) -> dict[str, Any]:
        return await current_settings()

    @router.get("/settings/channels", tags=["settings"])
    async def get_channels(actor: Annotated[Actor, require_roles(*ANY_STAFF)]) -> dict[str, Any]:
        view = await current_settings()
        return {"channels": view["channels"], "default_channel": view["default_channel"]}

    @router.put("/settings/channels", tags=["settings"])
    async def put_channels(body: ChoicesRequest, actor: Annotated[Actor, require_roles(Role.ADMIN)]) -> dict[str, Any]:
        return await change("channels", list(domain.check_choices(body.values, "values")), actor)

    @router.get("/settings/payment-methods", tags=["settings"])
    async def get_methods(actor: Annotated[Actor, require_roles(*ANY_STAFF)]) -> dict[str, Any]:
        return {"payment_methods": (await current_settings())["payment_methods"]}

    @router.put("/settings/payment-methods", tags=["settings"])
    async def put_methods(body: ChoicesRequest, actor: Annotated[Actor, require_roles(Role.ADMIN)]) -> dict[str, Any]:
        return await change("payment_methods", list(domain.check_choices(body.values, "values")), actor)

    @router.get("/settings/overpayment-threshold", tags=["settings"])
    async def get_threshold(actor: Annotated[Actor, require_roles(*ANY_STAFF)]) -> dict[str, Any]:
        return {"overpayment_threshold": (await current_settings())["overpayment_threshold"]}

    @router.put("/settings/overpayment-threshold", tags=["settings"])
    async def put_threshold(
        body: ThresholdRequest, actor: Annotated[Actor, require_roles(Role.ADMIN)]
    ) -> dict[str, Any]:
        return await change("overpayment_threshold", f"{body.amount:.2f}", actor)

    @router.get("/settings/number-formats", tags=["settings"])
    async def get_formats(actor: Annotated[Actor, require_roles(*ANY_STAFF)]) -> dict[str, Any]:
        return {"number_formats": (await current_settings())["number_formats"]}

    @router.put("/settings/number-formats", tags=["settings"])
    async def put_formats(
        body: Annotated[dict[str, NumberFormatRequest], Body(examples=[RECEIPT_FORMAT_EXAMPLE])],
        actor: Annotated[Actor, require_roles(Role.ADMIN)],
    ) -> dict[str, Any]:
        async with service.sessions() as session:
            current = await handlers.load_settings(session)
        formats = {kind: current.format_for(kind) for kind in domain.NUMBER_KINDS}
        for kind, requested in body.items():
            if kind not in domain.NUMBER_KINDS:
                raise Rejected(
                    "unknown_number_format", f"number formats are {', '.join(domain.NUMBER_KINDS)}", field=kind
                )
            formats[kind] = domain.check_number_format_change(
                kind, formats[kind], domain.NumberFormat(**requested.model_dump())
            )
        return await change("number_formats", {k: vars(v) for k, v in formats.items()}, actor)

    service.include(router)
    return service


async def _csv_lines(service: Service, query: domain.PaymentQuery) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> bytes:
        data = buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
        return data

    writer.writerow(EXPORT_COLUMNS)
    yield flush()
    async with service.sessions() as session:
        count = 0
        async for row in storage.stream_payments(session, query):
            writer.writerow(_export_values(row))
            count += 1
            if count % 1000 == 0:
                yield flush()
    yield flush()


XLSX_ROWS_PER_SHEET = 1_000_000  # Excel stops at 1,048,576 rows a sheet.


async def _xlsx_bytes(service: Service, query: domain.PaymentQuery) -> AsyncIterator[bytes]:
    # constant_memory writes each row to disk as it comes; the workbook is assembled in a temporary file.
    with tempfile.NamedTemporaryFile(suffix=".xlsx") as target:
        workbook = xlsxwriter.Workbook(target.name, {"constant_memory": True})
        bold = workbook.add_format({"bold": True})
        money = workbook.add_format({"num_format": "#,##0.00"})
        sheet, line = None, 0
        async with service.sessions() as session:
            async for row in storage.stream_payments(session, query):
                if sheet is None or line > XLSX_ROWS_PER_SHEET:
                    sheet = workbook.add_worksheet(f"Payments {len(workbook.worksheets()) + 1}")
                    sheet.write_row(0, 0, EXPORT_COLUMNS, bold)
                    line = 1
                values = _export_values(row)
                sheet.write_row(line, 0, values)
                # A number cell, so the sheet can sum it: Excel holds every number as a double, and amounts of
                # 2 decimals and up to 12 digits come back as the same 2-decimal text.
                sheet.write_number(line, 4, float(row.amount), money)
                line += 1
        if sheet is None:
            workbook.add_worksheet("Payments 1").write_row(0, 0, EXPORT_COLUMNS, bold)
        workbook.close()
        target.seek(0)
        while chunk := target.read(1 << 16):
            yield chunk
