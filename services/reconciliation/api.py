"""Reconciliation's HTTP routes: parse, authorize, call a command or a query, shape the answer with `views`."""

# No `from __future__ import annotations`: FastAPI reads the form and query annotations in place.

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Header, Query, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.reconciliation import commands, domain, queries, views, workflow
from services.reconciliation.domain import Resolution, StatementInvalid
from services.reconciliation.parsing import ColumnMapping, SheetMeta
from services.reconciliation.settings import ReconciliationSettings
from services.reconciliation.storage import audit_log, column_mappings, idempotency_keys
from shared import audit, idempotency
from shared.auth import Actor, Role, require_roles
from shared.contracts import Topic, new_envelope
from shared.contracts.events import UsageTracked
from shared.errors import Rejected
from shared.export import OPENAPI_RESPONSES, ExportFormat, export_response
from shared.outbox import stage

Manager = Annotated[Actor, require_roles(Role.BILLING_MANAGER)]
Staff = Annotated[Actor, require_roles(Role.CUSTOMER_EXECUTIVE, Role.BILLING_MANAGER)]
IdempotencyKey = Annotated[str, Header(min_length=8, max_length=200)]


class SplitPart(BaseModel):
    amount: Decimal = Field(max_digits=14, decimal_places=2)
    item_ids: list[str] = Field(default_factory=list)
    fee: bool = False
    note: str = Field(default="", max_length=200)


class ResolveRequest(BaseModel):
    action: Resolution
    reason: str | None = Field(default=None, max_length=500)
    line_ids: list[str] = Field(
        default_factory=list, description="For manual_match: the bank lines (default: the subject)."
    )
    item_ids: list[str] = Field(default_factory=list, description="For manual_match: the chosen candidates.")
    parts: list[SplitPart] = Field(default_factory=list, description="For split.")
    amount: Decimal | None = Field(
        default=None, max_digits=14, decimal_places=2, description="For adjustment_requested."
    )


class AssignRequest(BaseModel):
    owner: str = Field(min_length=1, max_length=200)


class TillCloseRequest(BaseModel):
    counted_cash: Decimal = Field(ge=0, max_digits=14, decimal_places=2)
    counted_cheques: Decimal = Field(default=Decimal(0), ge=0, max_digits=14, decimal_places=2)


class DecisionRequest(BaseModel):
    reason: str | None = Field(default=None, max_length=500)


class MappingBody(BaseModel):
    date: str
    reference: str
    amount: str | None = None
    credit: str | None = None
    debit: str | None = None
    text: str | None = None
    bank_reference: str | None = None
    date_format: str = "%Y-%m-%d"
    decimal_comma: bool = False
    delimiter: str = Field(default=",", min_length=1, max_length=1)


def router(sessions: async_sessionmaker[AsyncSession], settings: ReconciliationSettings) -> APIRouter:
    routes = APIRouter(tags=["reconciliation"])

    async def run(session: AsyncSession, actor: str = commands.SYSTEM) -> commands.RunSummary:
        return await commands.run_reconciliation(session, settings, today=datetime.now(UTC).date(), actor=actor)

    @routes.post("/statements", status_code=201)
    async def import_statement(
        actor: Manager,
        file: Annotated[UploadFile, File(description="camt.053, BAI2, MT940, CSV or XLSX.")],
        mapping: Annotated[str | None, Form(description="Saved column mapping (CSV/XLSX).")] = None,
        account: Annotated[str | None, Form()] = None,
        currency: Annotated[str | None, Form(min_length=3, max_length=3)] = None,
        opening_balance: Annotated[Decimal | None, Form()] = None,
        closing_balance: Annotated[Decimal | None, Form()] = None,
        statement_id: Annotated[str | None, Form(max_length=100)] = None,
    ) -> JSONResponse:
        content = await file.read(settings.max_upload_bytes + 1)
        if len(content) > settings.max_upload_bytes:
            raise Rejected("file_too_large", f"at most {settings.max_upload_bytes} bytes", field="file")
        filename = file.filename or "statement"
        saved = meta = None
        if mapping:
            if not (account and currency and opening_balance is not None and closing_balance is not None):
                raise Rejected(
                    "sheet_needs_balances",
                    "a CSV/XLSX import gives account, currency, opening_balance and closing_balance",
                    field="opening_balance",
                )
            async with sessions() as session:
                saved = await queries.mapping(session, mapping)
            meta = SheetMeta(
                account, currency.upper(), opening_balance, closing_balance, statement_id or f"{mapping}/{filename}"
            )
        try:
            async with sessions() as session, session.begin():
                result = await commands.import_statement_file(
                    session,
                    content,
                    filename,
                    actor=actor.name,
                    today=datetime.now(UTC).date(),
                    mapping=saved,
                    meta=meta,
                )
        except StatementInvalid as invalid:
            return JSONResponse(
                {
                    "type": "https://paydesk.dev/problems/statement_invalid",
                    "title": "statement invalid",
                    "status": 422,
                    "code": invalid.code,
                    "detail": invalid.detail,
                    "field": invalid.field,
                    "problems": [p.as_json() for p in invalid.problems],
                },
                status_code=422,
                media_type="application/problem+json",
            )
        summary = None
        if not result.replay:
            async with sessions() as session, session.begin():
                summary = await run(session)
        body = {
            "import_id": result.import_id,
            "statement_ids": result.statement_ids,
            "already_imported": result.replay,
            "reconciliation": summary.as_json() if summary else None,
        }
        return JSONResponse(body, status_code=200 if result.replay else 201)

    @routes.get("/statements/{statement_id}")
    async def get_statement(statement_id: str, actor: Manager) -> dict[str, Any]:
        async with sessions() as session:
            row, lines = await queries.statement(session, statement_id)
        return views.statement_view(row, lines)

    @routes.post("/reconciliation/run")
    async def run_now(actor: Manager) -> dict[str, int]:
        async with sessions() as session, session.begin():
            return (await run(session, actor.name)).as_json()

    @routes.get("/reconciliation/summary")
    async def daily_summary(actor: Manager) -> dict[str, Any]:
        async with sessions() as session:
            return views.summary_view(await queries.summary(session, now=queries.now()), settings.currency)

    @routes.get("/matches")
    async def list_matches(
        actor: Manager,
        rule: str | None = None,
        statement_id: str | None = None,
        payment_id: str | None = None,
        matched_from: datetime | None = None,
        matched_before: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=300)] = None,
    ) -> dict[str, Any]:
        filters = queries.MatchFilters(rule, statement_id, payment_id, matched_from, matched_before)
        async with sessions() as session:
            rows, next_cursor = await queries.search_matches(session, filters, limit=limit, cursor=cursor)
        return {"items": [views.match_view(r) for r in rows], "next_cursor": next_cursor}

    @routes.get("/exceptions")
    async def list_exceptions(
        actor: Manager,
        status: Literal["open", "resolved", "all"] = "open",
        kind: str | None = None,
        owner: str | None = None,
        older_than_days: Annotated[int | None, Query(ge=0)] = None,
        q: Annotated[str | None, Query(max_length=100)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=300)] = None,
    ) -> dict[str, Any]:
        filters = queries.ExceptionFilters(None if status == "all" else status, kind, owner, older_than_days, q)
        now = queries.now()
        async with sessions() as session:
            rows, next_cursor = await queries.search_exceptions(session, filters, limit=limit, cursor=cursor, now=now)
        return {"items": [views.exception_view(r, now) for r in rows], "next_cursor": next_cursor}

    @routes.get("/exceptions/{exception_id}")
    async def get_exception(exception_id: str, actor: Manager) -> dict[str, Any]:
        async with sessions() as session:
            row = await queries.exception(session, exception_id)
            found = await queries.candidates(session, abs(row.amount), row.raised_at.date())
            history = await audit.history(session, audit_log, exception_id)
        return views.exception_view(row, queries.now()) | {
            "candidates": [views.item_view(c) for c in found],
            "history": [h.as_json() for h in history],
        }

    @routes.post("/exceptions/{exception_id}/assign")
    async def assign(exception_id: str, body: AssignRequest, actor: Manager) -> dict[str, Any]:
        async with sessions() as session, session.begin():
            await workflow.assign(session, exception_id, body.owner, actor=actor.name)
        async with sessions() as session:
            return views.exception_view(await queries.exception(session, exception_id), queries.now())

    @routes.post("/exceptions/{exception_id}/resolve")
    async def resolve(
        exception_id: str, body: ResolveRequest, actor: Manager, idempotency_key: IdempotencyKey
    ) -> dict[str, Any]:
        command = workflow.Resolve(
            action=body.action,
            reason=body.reason,
            line_ids=tuple(body.line_ids),
            item_ids=tuple(body.item_ids),
            parts=tuple(domain.Split(p.amount, tuple(p.item_ids), p.fee, p.note) for p in body.parts),
            amount=body.amount,
        )
        async with sessions() as session, session.begin():
            await idempotency.once(
                session,
                idempotency_keys,
                operation="resolve",
                key=idempotency_key,
                request={"exception_id": exception_id, **body.model_dump(mode="json")},
                run=lambda: workflow.resolve_exception(
                    session, exception_id, command, actor=actor.name, settings=settings
                ),
            )
        async with sessions() as session:
            return views.exception_view(await queries.exception(session, exception_id), queries.now())

    @routes.post("/approvals/{approval_id}/approve")
    async def approve(approval_id: str, body: DecisionRequest, actor: Manager) -> dict[str, Any]:
        async with sessions() as session, session.begin():
            decided = await workflow.decide_adjustment(
                session, approval_id, approve=True, actor=actor.name, reason=body.reason
            )
        return decided.as_json()

    @routes.post("/approvals/{approval_id}/reject")
    async def reject(approval_id: str, body: DecisionRequest, actor: Manager) -> dict[str, Any]:
        async with sessions() as session, session.begin():
            decided = await workflow.decide_adjustment(
                session, approval_id, approve=False, actor=actor.name, reason=body.reason
            )
        return decided.as_json()

    @routes.post("/tills/{teller}/{business_date}/close", status_code=201)
    async def close_till(
        teller: str, business_date: date, body: TillCloseRequest, actor: Staff, idempotency_key: IdempotencyKey
    ) -> dict[str, Any]:
        async with sessions() as session, session.begin():
            await idempotency.once(
                session,
                idempotency_keys,
                operation="till_close",
                key=idempotency_key,
                request={"teller": teller, "date": business_date.isoformat(), **body.model_dump(mode="json")},
                run=lambda: workflow.close_till(
                    session,
                    teller,
                    business_date,
                    counted_cash=body.counted_cash,
                    counted_cheques=body.counted_cheques,
                    actor=actor.name,
                    settings=settings,
                ),
            )
        async with sessions() as session:
            return views.till_view(await queries.till(session, teller, business_date))

    @routes.get("/tills/{teller}/{business_date}")
    async def get_till(teller: str, business_date: date, actor: Staff) -> dict[str, Any]:
        async with sessions() as session:
            return views.till_view(await queries.till(session, teller, business_date))

    @routes.get("/settlements/{payment_id}")
    async def get_settlement(payment_id: str, actor: Staff) -> dict[str, Any]:
        async with sessions() as session:
            return views.settlement_view(await queries.settlement(session, payment_id))

    @routes.put("/statement-mappings/{name}")
    async def save_mapping(name: str, body: MappingBody, actor: Manager) -> dict[str, Any]:
        try:
            ColumnMapping(**body.model_dump())
        except ValueError as exc:
            raise Rejected("invalid_mapping", str(exc), field="amount") from exc
        now = datetime.now(UTC)
        values = {"name": name, "mapping": body.model_dump(), "updated_by": actor.name, "updated_at": now}
        async with sessions() as session, session.begin():
            await session.execute(
                pg_insert(column_mappings).values(**values).on_conflict_do_update(index_elements=["name"], set_=values)
            )
            await audit.record(
                session, audit_log, actor=actor.name, action="mapping.saved", subject=f"mapping:{name}",
                after=values["mapping"], at=now,
            )  # fmt: skip
        return {"name": name, "mapping": body.model_dump()}

    @routes.get("/reports/reconciliation", responses=OPENAPI_RESPONSES)
    async def report(actor: Manager, date_from: date, date_to: date, format: ExportFormat = "csv") -> StreamingResponse:
        if date_to < date_from:
            raise Rejected("invalid_period", "date_to is before date_from", field="date_to")
        usage = UsageTracked(
            event="report_generated",
            user_id=actor.name,
            properties={"report": "reconciliation", "format": format, "from": str(date_from), "to": str(date_to)},
            occurred_at=datetime.now(UTC),
        )
        async with sessions() as session, session.begin():
            await stage(
                session,
                Topic.ANALYTICS_EVENTS,
                new_envelope("usage.tracked", source=commands.SOURCE, subject=actor.name, data=usage),
            )
        rows = (views.report_line(r) async for r in queries.report_rows(sessions, date_from, date_to))
        return await export_response("reconciliation", format, views.REPORT_COLUMNS, rows, sheet_title="Reconciliation")

    return routes
