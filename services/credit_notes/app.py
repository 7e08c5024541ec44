"""The credit_notes service: issues credit notes (automatically on overpayment, or by staff), applies them to
open items, expires them on schedule, and serves the credit-notes tab, detail view and export."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import xlsxwriter
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from services.credit_notes import domain, handlers
from services.credit_notes.settings import CreditNotesSettings
from services.credit_notes.storage import plumbing
from shared.auth import Actor, Role, require_roles
from shared.contracts import Topic
from shared.contracts.events import PaymentType
from shared.errors import Rejected
from shared.messaging import Subscription
from shared.money import format_money
from shared.outbox import stage
from shared.service import Service

log = logging.getLogger(__name__)

STAFF = (Role.CUSTOMER_EXECUTIVE, Role.RECOVERY_EXECUTIVE, Role.BILLING_MANAGER)
IdempotencyKey = Annotated[str, Header(min_length=8, max_length=200)]


class CreditNotesService(Service):
    """A service with one more background task: the scheduled expiry of credit notes."""

    def __init__(self, settings: CreditNotesSettings) -> None:
        super().__init__(settings, plumbing, title="Paydesk credit_notes")
        self.number_format = domain.NumberFormat(
            prefix=settings.number_prefix, padding=settings.number_padding, start=settings.number_start
        )
        self.zone = ZoneInfo(settings.timezone)
        self.expiry_check_seconds = settings.expiry_check_seconds
        self._expiry_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await super().start()
        self._expiry_task = asyncio.create_task(self._expire_periodically(), name="credit_notes-expiry")

    async def stop(self) -> None:
        # Before the outbox drains, so what the last pass staged is published.
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
        await super().stop()

    async def expire_now(self, now: datetime | None = None) -> int:
        """One expiry pass; returns how many credit notes expired."""
        count = await handlers.run_expiry_pass(self.sessions, stage, now=now)
        if count:
            log.info("credit notes expired", extra={"count": count})
        return count

    async def _expire_periodically(self) -> None:
        while True:
            try:
                await self.expire_now()
            except Exception:
                # The next pass retries; nothing was half-done, each batch is one transaction.
                log.exception("credit-note expiry pass failed")
            await asyncio.sleep(self.expiry_check_seconds)


# --- HTTP shapes ---


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


class ExpiryPeriodBody(BaseModel):
    count: int = Field(ge=1, examples=[1])
    unit: domain.PeriodUnit = Field(examples=["years"])


class PolicyBody(BaseModel):
    expiry: ExpiryPeriodBody
    reasons: list[str] = Field(min_length=1, examples=[list(domain.DEFAULT_REASONS)])


def _money(amount: Decimal) -> str:
    return format(amount, "f")


def _policy_view(policy: domain.Policy) -> PolicyBody:
    return PolicyBody(
        expiry=ExpiryPeriodBody(count=policy.expiry.count, unit=policy.expiry.unit), reasons=list(policy.reasons)
    )


def _row_view(row: dict[str, Any], zone: ZoneInfo) -> dict[str, Any]:
    """One line of the credit-notes tab."""
    currency = row["currency"]
    return {
        "credit_note_number": row["credit_note_number"],
        "consumer": {"name": row["consumer_name"], "account_number": row["account_number"]},
        "amount": _money(row["amount"]),
        "remaining": _money(row["remaining"]),
        "currency": currency,
        "amount_display": format_money(row["amount"], currency),
        "remaining_display": format_money(row["remaining"], currency),
        "reason": row["reason"],
        "status": row["status"],
        "created_at": row["created_at"].isoformat(),
        "created_date": row["created_at"].astimezone(zone).date().isoformat(),
        "linked_payment": row["receipt_number"],
    }


def _detail_view(note: dict[str, Any]) -> dict[str, Any]:
    """The credit-note details view: header and status, consumer, dates, financial details, reason, linked payment."""
    currency = note["currency"]
    payment = note["payment"] or {}
    return {
        "credit_note_number": note["credit_note_number"],
        "status": note["status"],
        "consumer": {"name": note["consumer_name"], "account_number": note["account_number"]},
        "dates": {
            "created_at": note["created_at"].isoformat(),
            "expires_at": note["expires_at"].isoformat(),
            "expired_at": note["expired_at"].isoformat() if note["expired_at"] else None,
        },
        "financial": {
            "currency": currency,
            "original_amount": _money(note["amount"]),
            "applied_amount": _money(note["applied"]),
            "remaining_balance": _money(note["remaining"]),
            "usage_percentage": str(domain.usage_percentage(note["applied"], note["amount"])),
            "original_amount_display": format_money(note["amount"], currency),
            "applied_amount_display": format_money(note["applied"], currency),
            "remaining_balance_display": format_money(note["remaining"], currency),
        },
        "reason": note["reason"],
        "remarks": note["remarks"],
        "created_by": note["created_by"],
        "linked_payment": {
            "receipt_number": note["receipt_number"],
            "payment_id": note["payment_id"],
            "amount": _money(payment["amount"]) if payment else None,
            "payment_date": payment["payment_date"].isoformat() if payment else None,
            "method": payment.get("method"),
        },
        "applications": [
            {
                "id": a["id"],
                "payment_type": a["payment_type"],
                "item_reference": a["item_reference"],
                "amount": _money(a["amount"]),
                "applied_by": a["applied_by"],
                "applied_at": a["applied_at"].isoformat(),
            }
            for a in note["applications"]
        ],
    }


EXPORT_COLUMNS = (
    "Credit Note #",
    "Consumer",
    "Account Number",
    "Amount",
    "Remaining",
    "Currency",
    "Reason",
    "Status",
    "Created Date",
    "Linked Payment",
)


def _export_line(row: dict[str, Any], zone: ZoneInfo) -> list[str]:
    return [
        row["credit_note_number"],
        row["consumer_name"],
        row["account_number"],
        _money(row["amount"]),
        _money(row["remaining"]),
        row["currency"],
        row["reason"],
        row["status"],
        row["created_at"].astimezone(zone).date().isoformat(),
        row["receipt_number"],
    ]


def _filters(
    zone: ZoneInfo,
    *,
    q: str | None,
    status: str | None,
    created: domain.CreatedWithin | None,
    created_from: date | None,
    created_to: date | None,
    reasons: list[str] | None,
    consumer: str | None,
    remaining: domain.RemainingFilter | None,
    receipt_number: str | None,
    amount_min: Decimal | None,
    amount_max: Decimal | None,
    newest_first: bool = True,
) -> handlers.CreditNoteFilters:
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
            created, now=datetime.now(UTC), zone=zone, date_from=created_from, date_to=created_to
        )
    domain.validate_amount_range(amount_min, amount_max)
    return handlers.CreditNoteFilters(
        text=q.strip() if q and q.strip() else None,
        status=chosen_status,
        created_from=start,
        created_before=end,
        reasons=tuple(reasons or ()),
        consumer=consumer.strip() if consumer and consumer.strip() else None,
        remaining=remaining,
        receipt_number=receipt_number.strip() if receipt_number and receipt_number.strip() else None,
        amount_min=amount_min,
        amount_max=amount_max,
        newest_first=newest_first,
    )


async def list_filters(
    request: Request,
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
) -> handlers.CreditNoteFilters:
    """The search and filters of the credit-notes tab, from the query string."""
    service: CreditNotesService = request.app.state.service
    return _filters(
        service.zone,
        q=q,
        status=status,
        created=created,
        created_from=created_from,
        created_to=created_to,
        reasons=reason,
        consumer=consumer,
        remaining=remaining,
        receipt_number=receipt_number,
        amount_min=amount_min,
        amount_max=amount_max,
        newest_first=order == "newest",
    )


Filters = Annotated[handlers.CreditNoteFilters, Depends(list_filters)]


def create_service(settings: CreditNotesSettings | None = None) -> CreditNotesService:
    settings = settings or CreditNotesSettings()
    service = CreditNotesService(settings)
    service.subscribe(
        Subscription("payments", Topic.PAYMENTS_EVENTS, handlers.payment_handlers(stage, service.number_format))
    )
    service.subscribe(Subscription("billing", Topic.BILLING_RECEIVABLES, handlers.BILLING_HANDLERS))
    service.publishes(Topic.CREDITNOTES_EVENTS, ["credit_note.issued", "credit_note.applied", "credit_note.expired"])
    zone = service.zone

    router = APIRouter(tags=["credit notes"])

    @router.post("/credit-notes", status_code=201)
    async def issue(
        body: IssueRequest, actor: Annotated[Actor, require_roles(*STAFF)], idempotency_key: IdempotencyKey
    ) -> dict[str, Any]:
        command = handlers.IssueCreditNote(**body.model_dump())
        async with service.sessions() as session, session.begin():
            number = await handlers.issue_credit_note(
                session,
                stage,
                command,
                created_by=actor.name,
                idempotency_key=idempotency_key,
                number_format=service.number_format,
            )
        async with service.sessions() as session:
            note = await handlers.find_credit_note(session, number)
            summary = await handlers.creation_summary(session, number)
        return {
            "credit_note_number": number,
            "amount": _money(note["amount"]),
            "remaining": _money(note["remaining"]),
            "currency": note["currency"],
            "status": note["status"],
            "reason": note["reason"],
            "remarks": note["remarks"],
            "created_by": note["created_by"],
            "created_at": note["created_at"].isoformat(),
            "expires_at": note["expires_at"].isoformat(),
            "receipt_number": note["receipt_number"],
            "summary": {
                "original_payment_amount": _money(summary["original_payment_amount"]),
                "credit_note_amount": _money(summary["credit_note_amount"]),
                "remaining_payment_value": _money(summary["remaining_payment_value"]),
                "full_reversal": summary["remaining_payment_value"] == 0,
            },
        }

    @router.get("/credit-notes")
    async def search(
        actor: Annotated[Actor, require_roles(*STAFF)],
        filters: Filters,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> dict[str, Any]:
        async with service.sessions() as session:
            page, next_cursor = await handlers.search_credit_notes(session, filters, limit=limit, cursor=cursor)
        return {"items": [_row_view(r, zone) for r in page], "next_cursor": next_cursor}

    @router.get("/credit-notes/export")
    async def export(
        actor: Annotated[Actor, require_roles(*STAFF)],
        filters: Filters,
        format: Literal["csv", "xlsx"] = "csv",
    ) -> StreamingResponse:
        rows = handlers.iter_credit_notes(service.sessions, filters)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        if format == "csv":
            return StreamingResponse(
                _csv_chunks(rows, zone),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="credit-notes-{stamp}.csv"'},
            )
        path = await _write_xlsx(rows, zone)
        return StreamingResponse(
            _file_chunks(path),
            media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            headers={"Content-Disposition": f'attachment; filename="credit-notes-{stamp}.xlsx"'},
        )

    @router.get("/credit-notes/payments/{receipt_number}")
    async def payment_for_credit(receipt_number: str, actor: Annotated[Actor, require_roles(*STAFF)]) -> dict[str, Any]:
        """The read-only payment block of the create form, with the maximum credit it still allows."""
        async with service.sessions() as session:
            payment = await handlers.find_payment(session, receipt_number)
            policy = await handlers.load_policy(session)
        return {
            "consumer_name": payment["consumer_name"],
            "account_number": payment["account_number"],
            "receipt_number": payment["receipt_number"],
            "payment_id": payment["payment_id"],
            "payment_amount": _money(payment["amount"]),
            "currency": payment["currency"],
            "payment_date": payment["payment_date"].isoformat(),
            "payment_method": payment["method"],
            "status": payment["status"],
            "credited": _money(payment["credited"]),
            "maximum_credit": _money(payment["creditable"]),
            "maximum_credit_display": format_money(payment["creditable"], payment["currency"]),
            "reasons": list(policy.reasons),
        }

    @router.get("/credit-notes/{number}")
    async def details(number: str, actor: Annotated[Actor, require_roles(*STAFF)]) -> dict[str, Any]:
        async with service.sessions() as session:
            return _detail_view(await handlers.credit_note_details(session, number))

    @router.get("/credit-notes/{number}/history")
    async def audit_trail(number: str, actor: Annotated[Actor, require_roles(*STAFF)]) -> list[dict[str, Any]]:
        async with service.sessions() as session:
            await handlers.find_credit_note(session, number)
            entries = await handlers.history(session, number)
        return [{**e, "at": e["at"].isoformat()} for e in entries]

    @router.post("/credit-notes/{number}/apply")
    async def apply(
        number: str,
        body: ApplyRequest,
        actor: Annotated[Actor, require_roles(*STAFF)],
        idempotency_key: IdempotencyKey,
    ) -> dict[str, Any]:
        command = handlers.ApplyCreditNote(credit_note_number=number, **body.model_dump())
        async with service.sessions() as session, session.begin():
            application_id = await handlers.apply_credit_note(
                session, stage, command, applied_by=actor.name, idempotency_key=idempotency_key
            )
        async with service.sessions() as session:
            note = await handlers.credit_note_details(session, number)
        application = next(a for a in note["applications"] if a["id"] == application_id)
        return {
            "application_id": application_id,
            "credit_note_number": number,
            "payment_type": application["payment_type"],
            "item_reference": application["item_reference"],
            "applied": _money(application["amount"]),
            "applied_total": _money(note["applied"]),
            "remaining": _money(note["remaining"]),
            "usage_percentage": str(domain.usage_percentage(note["applied"], note["amount"])),
            "status": note["status"],
        }

    @router.get("/settings/credit-notes", tags=["settings"])
    async def get_settings(actor: Annotated[Actor, require_roles(*STAFF)]) -> PolicyBody:
        async with service.sessions() as session:
            return _policy_view(await handlers.load_policy(session))

    @router.get("/settings/credit-notes/history", tags=["settings"])
    async def settings_history(actor: Annotated[Actor, require_roles(Role.ADMIN)]) -> list[dict[str, Any]]:
        async with service.sessions() as session:
            entries = await handlers.history(session, handlers.POLICY)
        return [{**e, "at": e["at"].isoformat()} for e in entries]

    @router.put("/settings/credit-notes", tags=["settings"])
    async def put_settings(body: PolicyBody, actor: Annotated[Actor, require_roles(Role.ADMIN)]) -> PolicyBody:
        policy = domain.Policy(
            expiry=domain.ExpiryPeriod(count=body.expiry.count, unit=body.expiry.unit), reasons=tuple(body.reasons)
        )
        async with service.sessions() as session, session.begin():
            await handlers.update_policy(session, policy, actor=actor.name)
        return _policy_view(policy)

    service.include(router)
    return service


async def _csv_chunks(rows: AsyncIterator[dict[str, Any]], zone: ZoneInfo) -> AsyncIterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    async for row in rows:
        writer.writerow(_export_line(row, zone))
        count += 1
        if count % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


async def _write_xlsx(rows: AsyncIterator[dict[str, Any]], zone: ZoneInfo) -> str:
    """Write the export to a temporary file; constant-memory mode keeps one row in memory at a time."""
    handle, path = tempfile.mkstemp(suffix=".xlsx", prefix="credit-notes-")
    os.close(handle)
    workbook = xlsxwriter.Workbook(path, {"constant_memory": True})
    written = False
    try:
        sheet = workbook.add_worksheet("Credit notes")
        bold = workbook.add_format({"bold": True})
        money = workbook.add_format({"num_format": "#,##0.00"})
        sheet.write_row(0, 0, EXPORT_COLUMNS, bold)
        line = 1
        async for row in rows:
            values = _export_line(row, zone)
            sheet.write_row(line, 0, values[:3])
            # Numbers, so the spreadsheet can sum them. An xlsx number cell is a double by definition; amounts
            # with 2 decimals below 10^13 round-trip exactly through it.
            sheet.write_number(line, 3, float(row["amount"]), money)
            sheet.write_number(line, 4, float(row["remaining"]), money)
            sheet.write_row(line, 5, values[5:])
            line += 1
        written = True
    finally:
        await asyncio.to_thread(workbook.close)
        if not written:
            os.unlink(path)
    return path


async def _file_chunks(path: str, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    try:
        with open(path, "rb") as handle:  # noqa: ASYNC230 - a local temporary file, read in small chunks
            while chunk := handle.read(size):
                yield chunk
    finally:
        os.unlink(path)


async def expire_once() -> int:
    """One expiry pass against the configured database (the `paydesk expire-credit-notes` command)."""
    service = create_service()
    try:
        return await handlers.run_expiry_pass(service.sessions, stage)
    finally:
        await service.engine.dispose()
