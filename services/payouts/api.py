"""Payouts' HTTP routes: parse, authorize, call a command or a query, shape the answer with `views`."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, File, Header, Query, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from services.payouts import commands, domain, execution, payees, queries, runs, views
from services.payouts.rendering import statement_document
from shared.auth import Actor, Role, require_roles
from shared.errors import NotFound, Rejected
from shared.export import OPENAPI_RESPONSES, ExportFormat, export_response

if TYPE_CHECKING:
    from services.payouts.app import PayoutsService

Manager = Annotated[Actor, require_roles(Role.BILLING_MANAGER)]
# Billing managers see every payee; a payee's token sees only its own payee (anything else answers 404).
Reader = Annotated[Actor, require_roles(Role.BILLING_MANAGER, Role.PAYEE)]
IdempotencyKey = Annotated[str, Header(min_length=8, max_length=200)]


def scoped(actor: Actor, payee_id: str) -> None:
    """A payee's token reads only its own payee id: another answers 404, as if it did not exist."""
    if actor.has_any((Role.BILLING_MANAGER,)):
        return
    if actor.payee_id is None or actor.payee_id != payee_id:
        raise NotFound("payee_not_found", f"no payee {payee_id}", field="payee_id")


class PayeeBody(BaseModel):
    name: str = Field(min_length=1, max_length=200, examples=["Cityville Retail Agent 12"])
    payee_type: str = Field(examples=["agent", "partner", "customer"])
    country: str = Field(examples=["DE"])
    payout_currency: str = Field(examples=["EUR"])
    method: str | None = Field(default=None, examples=["stripe", "bank"])
    stripe_account: str | None = Field(default=None, examples=["acct_1PaydeskAgent12"])
    iban: str | None = Field(default=None, examples=["DE89370400440532013000"])
    bic: str | None = None
    tax_id: str | None = Field(default=None, max_length=40)
    email: str | None = Field(default=None, max_length=200)
    payee_group: str | None = Field(default=None, max_length=60, examples=["retail-agents"])
    schedule: str = Field(default="monthly", examples=["monthly", "weekly", "on_request"])
    agent_channel: str | None = Field(default=None, max_length=50, examples=["Agent Network"])
    agent_user: str | None = Field(default=None, max_length=200, examples=["Jane Smith"])
    account_number: str | None = Field(default=None, max_length=50)
    external_id: str | None = Field(default=None, max_length=100)


class PayeeUpdate(PayeeBody):
    status: str = Field(default="Active", examples=["Active", "Suspended"])


class TierBody(BaseModel):
    from_volume: Decimal = Field(ge=0)
    percent: Decimal = Field(ge=0, le=100)


class RuleBody(BaseModel):
    payee_id: str | None = None
    payee_group: str | None = None
    kind: domain.RuleKind
    currency: str = Field(examples=["USD"])
    effective_from: date
    effective_to: date | None = None
    percent: Decimal | None = Field(default=None, examples=["2.5"])
    fixed: Decimal | None = None
    tiers: list[TierBody] = Field(default_factory=list)
    minimum_per_payment: Decimal | None = None
    cap_per_payment: Decimal | None = None
    cap_per_month: Decimal | None = None


class RateBody(BaseModel):
    base: str = Field(examples=["EUR"])
    quote: str = Field(examples=["USD"])
    rate: Decimal = Field(gt=0, max_digits=24, decimal_places=10, examples=["1.1373"])
    as_of: date


class EarningBody(BaseModel):
    payee_id: str
    kind: Literal["manual", "adjustment"] = "manual"
    amount: Decimal = Field(max_digits=14, examples=["25.00", "-4.50"])
    currency: str = Field(examples=["USD"])
    earned_on: date
    reason: str = Field(min_length=1, max_length=500)
    description: str | None = Field(default=None, max_length=500)


class RunBody(BaseModel):
    as_of: date | None = Field(default=None, description="The run's date: rates on or before it; lines up to it.")
    period_from: date | None = None
    period_to: date | None = None
    countries: list[str] = Field(default_factory=list)
    currencies: list[str] = Field(default_factory=list)
    payee_ids: list[str] = Field(default_factory=list)
    payee_types: list[str] = Field(default_factory=list)
    schedules: list[str] = Field(default_factory=list)
    minimum_amount: Decimal | None = Field(default=None, ge=0)

    def filters(self, today: date) -> runs.RunFilters:
        return runs.RunFilters(
            as_of=self.as_of or today,
            period_from=self.period_from,
            period_to=self.period_to,
            countries=tuple(domain.country_code(c, field="countries") for c in self.countries),
            currencies=tuple(domain.currency_code(c, field="currencies") for c in self.currencies),
            payee_ids=tuple(self.payee_ids),
            payee_types=tuple(self.payee_types),
            schedules=tuple(self.schedules),
            minimum_amount=self.minimum_amount,
        )


class DecisionBody(BaseModel):
    reason: str | None = Field(default=None, max_length=500)


class BankStatusBody(BaseModel):
    status: Literal["Paid", "Failed", "Returned"]
    reason: str | None = Field(default=None, max_length=500)


async def _read(upload: UploadFile, max_bytes: int) -> bytes:
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise Rejected("file_too_large", f"files are at most {max_bytes} bytes", field="file")
    return data


def _report(report: dict[str, Any]) -> JSONResponse:
    return JSONResponse(report, status_code=422 if report["errors"] else 200)


def router(service: PayoutsService) -> APIRouter:
    """Payees, earnings, rules, rates, approvals, runs, payouts and statements."""
    routes = APIRouter(tags=["payouts"])
    sessions, settings = service.sessions, service.settings
    zone = ZoneInfo(settings.timezone)

    def today() -> date:
        return datetime.now(zone).date()

    # --- payees ---

    @routes.post("/payees", status_code=201)
    async def create_payee(body: PayeeBody, actor: Manager, idempotency_key: IdempotencyKey) -> dict[str, Any]:
        async with sessions() as session, session.begin():
            payee_id = await payees.create_payee(
                session, payees.PayeeDraft(**body.model_dump()), actor=actor.name, idempotency_key=idempotency_key
            )
        async with sessions() as session:
            return views.payee_view(await queries.payee(session, payee_id))

    @routes.get("/payees")
    async def search_payees(
        actor: Manager,
        q: Annotated[str | None, Query(max_length=100)] = None,
        payee_type: str | None = None,
        country: str | None = None,
        currency: str | None = None,
        status: str | None = None,
        method: str | None = None,
        group: str | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> dict[str, Any]:
        filters = queries.PayeeFilters(
            (q or "").strip() or None,
            payee_type,
            country and country.upper(),
            currency and currency.upper(),
            status,
            method,
            group,
        )
        async with sessions() as session:
            rows, next_cursor = await queries.search_payees(session, filters, limit=limit, cursor=cursor)
        return {"items": [views.payee_view(r) for r in rows], "next_cursor": next_cursor}

    @routes.post("/payees/import")
    async def import_payees(actor: Manager, file: Annotated[UploadFile, File()], dry_run: bool = False) -> JSONResponse:
        data = await _read(file, settings.import_max_bytes)
        async with sessions() as session, session.begin():
            report = await payees.import_payees(
                session, data, actor=actor.name, max_bytes=settings.import_max_bytes, dry_run=dry_run
            )
        return _report(report)

    @routes.get("/payees/{payee_id}")
    async def get_payee(payee_id: str, actor: Reader) -> dict[str, Any]:
        scoped(actor, payee_id)
        async with sessions() as session:
            return views.payee_view(await queries.payee(session, payee_id))

    @routes.put("/payees/{payee_id}")
    async def update_payee(payee_id: str, body: PayeeUpdate, actor: Manager) -> dict[str, Any]:
        values = body.model_dump()
        status = values.pop("status")
        async with sessions() as session, session.begin():
            await payees.update_payee(session, payee_id, payees.PayeeDraft(**values), status=status, actor=actor.name)
        async with sessions() as session:
            return views.payee_view(await queries.payee(session, payee_id))

    @routes.get("/payees/{payee_id}/earnings")
    async def payee_earnings(
        payee_id: str,
        actor: Reader,
        status: str | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> dict[str, Any]:
        scoped(actor, payee_id)
        year_start = date(today().year, 1, 1)
        async with sessions() as session:
            rows, next_cursor = await queries.earnings(session, payee_id, status=status, limit=limit, cursor=cursor)
            totals = await queries.payee_totals(
                session, payee_id, year_start=year_start, year_end=year_start.replace(year=year_start.year + 1)
            )
        return {
            "payee_id": payee_id,
            "totals": views.totals_view(totals),
            "items": [views.line_view(r) for r in rows],
            "next_cursor": next_cursor,
        }

    @routes.get("/payees/{payee_id}/statements/{run_id}.pdf")
    async def statement_pdf(payee_id: str, run_id: str, actor: Reader) -> Response:
        scoped(actor, payee_id)
        async with sessions() as session:
            data = await queries.statement(session, payee_id, run_id)
        document = statement_document(data, utility=settings.utility_name)
        pdf = await asyncio.to_thread(service.renderer.pdf, document)
        filename = f"statement-{payee_id}-{run_id}.pdf"
        return Response(
            pdf, media_type="application/pdf", headers={"Content-Disposition": f'inline; filename="{filename}"'}
        )

    @routes.get("/me")
    async def self_view(actor: Annotated[Actor, require_roles(Role.PAYEE)]) -> dict[str, Any]:
        """The payee's own dashboard: details, total earned, pending and paid this year, recent payouts."""
        if actor.payee_id is None:
            raise NotFound("payee_not_found", "this token names no payee", field="payee_id")
        year_start = date(today().year, 1, 1)
        async with sessions() as session:
            payee = await queries.payee(session, actor.payee_id)
            totals = await queries.payee_totals(
                session, actor.payee_id, year_start=year_start, year_end=year_start.replace(year=year_start.year + 1)
            )
            recent, _ = await queries.payout_history(
                session, queries.PayoutFilters(payee_id=actor.payee_id), limit=20, cursor=None
            )
        return {
            "payee": views.payee_view(payee),
            "totals": views.totals_view(totals),
            "payouts": [views.payout_view(p) for p in recent],
        }

    # --- earnings ---

    @routes.post("/earnings", status_code=201)
    async def add_earning(body: EarningBody, actor: Manager, idempotency_key: IdempotencyKey) -> dict[str, Any]:
        command = commands.ManualEarning(**body.model_dump())
        async with sessions() as session, session.begin():
            line_id = await commands.add_manual_line(
                session,
                command,
                actor=actor.name,
                limit=settings.manual_approval_limit,
                idempotency_key=idempotency_key,
            )
        async with sessions() as session:
            rows, _ = await queries.earnings(session, body.payee_id, status=None, limit=200, cursor=None)
        return views.line_view(next(r for r in rows if r["line_id"] == line_id))

    @routes.post("/earnings/import")
    async def import_earnings(
        actor: Manager, file: Annotated[UploadFile, File()], dry_run: bool = False
    ) -> JSONResponse:
        data = await _read(file, settings.import_max_bytes)
        async with sessions() as session, session.begin():
            report = await commands.import_lines(
                session, data, actor=actor.name, max_bytes=settings.import_max_bytes, dry_run=dry_run
            )
        return _report(report)

    @routes.post("/earnings/{line_id}/invoices", status_code=201)
    async def upload_invoice(line_id: str, actor: Reader, file: Annotated[UploadFile, File()]) -> dict[str, Any]:
        data = await _read(file, settings.invoice_max_bytes)
        scope = None if actor.has_any((Role.BILLING_MANAGER,)) else (actor.payee_id or "")
        async with sessions() as session, session.begin():
            invoice_id = await commands.upload_invoice(
                session,
                line_id,
                file.filename or "invoice",
                data,
                actor=actor.name,
                payee_scope=scope,
                max_bytes=settings.invoice_max_bytes,
            )
        return {"invoice_id": invoice_id, "line_id": line_id, "size": len(data)}

    @routes.get("/invoices/{invoice_id}")
    async def download_invoice(invoice_id: str, actor: Reader) -> Response:
        async with sessions() as session:
            invoice = await queries.invoice_file(session, invoice_id)
        scoped(actor, invoice["payee_id"])
        return Response(
            bytes(invoice["content"]),
            media_type=invoice["content_type"],
            headers={"Content-Disposition": f'attachment; filename="{invoice["invoice_id"]}"'},
        )

    # --- rules and rates ---

    @routes.post("/rules", status_code=201)
    async def add_rule(body: RuleBody, actor: Manager) -> dict[str, Any]:
        rule = domain.CommissionRule(
            rule_id="new",
            tiers=tuple(domain.Tier(t.from_volume, t.percent) for t in body.tiers),
            **body.model_dump(exclude={"tiers"}),
        )
        async with sessions() as session, session.begin():
            rule_id = await commands.add_rule(session, rule, actor=actor.name)
        return {"rule_id": rule_id, "description": rule.describe()}

    @routes.get("/rules")
    async def list_rules(actor: Manager, payee_id: str | None = None) -> list[dict[str, Any]]:
        async with sessions() as session:
            return [views.rule_view(r) for r in await queries.list_rules(session, payee_id)]

    @routes.post("/rates/import")
    async def import_rates(actor: Manager, file: Annotated[UploadFile, File()]) -> dict[str, Any]:
        data = await _read(file, 2 * 1024 * 1024)
        async with sessions() as session, session.begin():
            found, added = await commands.import_rates(session, data, actor=actor.name)
        return {"rates": found, "new": added}

    @routes.post("/rates", status_code=201)
    async def enter_rate(body: RateBody, actor: Manager) -> dict[str, Any]:
        async with sessions() as session, session.begin():
            await commands.enter_rate(session, body.base, body.quote, body.rate, body.as_of, actor=actor.name)
        return {
            "base": body.base.upper(),
            "quote": body.quote.upper(),
            "rate": format(body.rate, "f"),
            "as_of": body.as_of.isoformat(),
        }

    @routes.get("/rates")
    async def list_rates(actor: Manager, as_of: date | None = None) -> list[dict[str, Any]]:
        async with sessions() as session:
            return [views.rate_view(r) for r in await queries.list_rates(session, on=as_of)]

    # --- approvals (manual lines above the limit, and runs) ---

    @routes.get("/approvals")
    async def pending(actor: Manager) -> list[dict[str, Any]]:
        async with sessions() as session:
            return [a.as_json() for a in await queries.pending_approvals(session)]

    async def _decide(approval_id: str, actor: Actor, approve: bool, reason: str | None) -> dict[str, Any]:
        async with sessions() as session, session.begin():
            found = await queries.approval(session, approval_id)
            if found.kind == commands.RUN_APPROVAL:
                decision = await runs.decide_run(
                    session, found.subject, approver=actor.name, approve=approve, reason=reason
                )
            else:
                decision = await commands.decide_line(
                    session, approval_id, approver=actor.name, approve=approve, reason=reason
                )
        return decision.as_json()

    @routes.post("/approvals/{approval_id}/approve")
    async def approve(approval_id: str, actor: Manager, body: DecisionBody | None = None) -> dict[str, Any]:
        return await _decide(approval_id, actor, True, body.reason if body else None)

    @routes.post("/approvals/{approval_id}/reject")
    async def reject(approval_id: str, actor: Manager, body: DecisionBody | None = None) -> dict[str, Any]:
        return await _decide(approval_id, actor, False, body.reason if body else None)

    # --- runs ---

    @routes.post("/runs/preview")
    async def preview(body: RunBody, actor: Manager) -> dict[str, Any]:
        async with sessions() as session:
            plan, payees = await runs.plan(session, body.filters(today()), settings)
        return views.plan_view(plan, payees)

    @routes.post("/runs", status_code=201)
    async def create_run(body: RunBody, actor: Manager, idempotency_key: IdempotencyKey) -> dict[str, Any]:
        async with sessions() as session, session.begin():
            run_id = await runs.create_run(
                session, body.filters(today()), settings, actor=actor.name, idempotency_key=idempotency_key
            )
        async with sessions() as session:
            return views.run_view(await queries.run_details(session, run_id))

    @routes.get("/runs/{run_id}")
    async def get_run(run_id: str, actor: Manager) -> dict[str, Any]:
        async with sessions() as session:
            return views.run_view(await queries.run_details(session, run_id))

    @routes.post("/runs/{run_id}/approve")
    async def approve_run(run_id: str, actor: Manager, body: DecisionBody | None = None) -> dict[str, Any]:
        async with sessions() as session, session.begin():
            await runs.decide_run(
                session, run_id, approver=actor.name, approve=True, reason=body.reason if body else None
            )
        async with sessions() as session:
            return views.run_view(await queries.run_details(session, run_id))

    @routes.post("/runs/{run_id}/reject")
    async def reject_run(run_id: str, actor: Manager, body: DecisionBody | None = None) -> dict[str, Any]:
        async with sessions() as session, session.begin():
            await runs.decide_run(
                session, run_id, approver=actor.name, approve=False, reason=body.reason if body else None
            )
        async with sessions() as session:
            return views.run_view(await queries.run_details(session, run_id))

    @routes.post("/runs/{run_id}/execute")
    async def execute_run(run_id: str, actor: Manager) -> dict[str, Any]:
        result = await execution.execute_run(
            sessions, run_id, actor=actor.name, client=service.stripe, settings=settings, after_send=service.after_send
        )
        async with sessions() as session:
            run = views.run_view(await queries.run_details(session, run_id))
        return {**run, "execution": result.as_json()}

    @routes.get("/runs/{run_id}/files/{file_id}.xml")
    async def bank_file(run_id: str, file_id: str, actor: Manager) -> Response:
        async with sessions() as session:
            content = await queries.bank_file(session, file_id)
        return Response(
            content,
            media_type="application/xml",
            headers={"Content-Disposition": f'attachment; filename="{file_id}.xml"'},
        )

    # --- payout history ---

    def _payout_filters(
        payee_id: str | None,
        run_id: str | None,
        status: str | None,
        currency: str | None,
        method: str | None,
        created_from: date | None,
        created_to: date | None,
    ) -> queries.PayoutFilters:
        start = datetime.combine(created_from, datetime.min.time(), zone) if created_from else None
        end = datetime.combine(created_to, datetime.min.time(), zone) if created_to else None
        if end is not None:
            end += timedelta(days=1)  # the whole of the last day
        return queries.PayoutFilters(payee_id, run_id, status, currency and currency.upper(), method, start, end)

    @routes.get("/payouts")
    async def payout_history(
        actor: Reader,
        payee_id: str | None = None,
        run_id: str | None = None,
        status: str | None = None,
        currency: str | None = None,
        method: str | None = None,
        created_from: date | None = None,
        created_to: date | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> dict[str, Any]:
        if not actor.has_any((Role.BILLING_MANAGER,)):
            payee_id = actor.payee_id or "-"
        filters = _payout_filters(payee_id, run_id, status, currency, method, created_from, created_to)
        async with sessions() as session:
            rows, next_cursor = await queries.payout_history(session, filters, limit=limit, cursor=cursor)
        return {"items": [views.payout_view(r) for r in rows], "next_cursor": next_cursor}

    @routes.get("/payouts/export", responses=OPENAPI_RESPONSES)
    async def export_payouts(
        actor: Manager,
        payee_id: str | None = None,
        run_id: str | None = None,
        status: str | None = None,
        currency: str | None = None,
        method: str | None = None,
        created_from: date | None = None,
        created_to: date | None = None,
        format: ExportFormat = "csv",
    ) -> StreamingResponse:
        filters = _payout_filters(payee_id, run_id, status, currency, method, created_from, created_to)
        rows = (views.export_line(r) async for r in queries.iter_payouts(sessions, filters))
        return await export_response("payouts", format, views.EXPORT_COLUMNS, rows, sheet_title="Payouts")

    @routes.post("/payouts/{payout_id}/bank-status")
    async def bank_status(payout_id: str, body: BankStatusBody, actor: Manager) -> dict[str, Any]:
        """A bank payout's outcome from the bank statement (until the reconciliation service reports it)."""
        async with sessions() as session, session.begin():
            moved = await runs.report_bank_status(session, payout_id, body.status, reason=body.reason, actor=actor.name)
        return {"payout_id": payout_id, "status": body.status, "changed": moved}

    return routes
