"""Collections' HTTP routes: parse, authorize, call a command or a query, shape the answer with `views`."""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations in place.

from datetime import date, datetime, time
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.collections import activities, commands, domain, queries, rescheduling, views
from services.collections.domain import ActivityKind, AgingBucket, ArrangementStatus, Frequency
from services.collections.queries import WorklistFilters, WorklistSort
from services.collections.runtime import Desk
from shared.auth import Actor, Role, require_account, require_roles
from shared.errors import Rejected
from shared.export import OPENAPI_RESPONSES, ExportFormat, export_response

STAFF = (Role.CUSTOMER_EXECUTIVE, Role.RECOVERY_EXECUTIVE, Role.BILLING_MANAGER)
Staff = Annotated[Actor, require_roles(*STAFF)]
# Staff read any account; a customer only their own (another account answers 404, never 403).
AccountReader = Annotated[Actor, require_account(*STAFF)]
# Customer executives set plans up during a visit too (the seed's `customer_plan_setup`).
Arranger = Annotated[Actor, require_roles(Role.RECOVERY_EXECUTIVE, Role.CUSTOMER_EXECUTIVE)]
WAITS = "Above the approval limits: nothing changed yet; waits for a billing manager (`approval_id`)."
Collector = Annotated[Actor, require_roles(Role.RECOVERY_EXECUTIVE, Role.BILLING_MANAGER)]
Manager = Annotated[Actor, require_roles(Role.BILLING_MANAGER)]
IdempotencyKey = Annotated[str, Header(min_length=8, max_length=200)]
Money = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]


class ArrangementTerms(BaseModel):
    installments: int = Field(
        ge=1, le=domain.MAX_INSTALLMENTS, description="Regular installments after the down payment."
    )
    frequency: Frequency
    first_due_date: date = Field(description="The first installment's (or the down payment's) due date.")
    grace_days: int = Field(default=0, ge=0, le=90)
    down_payment: Money = Decimal("0.00")
    items: list[str] | None = Field(
        default=None, description="Item references to cover; omitted: everything overdue.", max_length=500
    )
    notes: str | None = Field(default=None, max_length=2000)
    customer_initiated: bool = False
    negotiation_seconds: int | None = Field(default=None, ge=0, description="How long the negotiation took.")


class ArrangementRequest(ArrangementTerms):
    account_number: str = Field(min_length=1, max_length=50, examples=["WU-10001"])


class ReageRequest(ArrangementTerms):
    reason: str = Field(min_length=1, max_length=500)


class ModifyRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=500, description="Why the terms change (kept in the audit trail).")
    installments: int | None = Field(default=None, ge=1, le=domain.MAX_INSTALLMENTS)
    frequency: Frequency | None = None
    first_due_date: date | None = None
    grace_days: int | None = Field(default=None, ge=0, le=90)
    amounts: list[Annotated[Decimal, Field(gt=0, max_digits=12, decimal_places=2)]] = Field(
        default_factory=list, description="Explicit amounts that add up to the remaining balance.", max_length=120
    )


class ReasonRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


class DecisionRequest(BaseModel):
    reason: str | None = Field(default=None, max_length=500)


class ActivityRequest(BaseModel):
    account_number: str = Field(min_length=1, max_length=50)
    activity_type: ActivityKind
    outcome: str | None = Field(default=None, max_length=200)
    customer_response: str | None = Field(default=None, max_length=200)
    notes: str | None = Field(default=None, max_length=2000)
    promise_amount: Decimal | None = Field(default=None, gt=0, max_digits=12, decimal_places=2)
    promise_date: date | None = None
    follow_up_on: date | None = None
    arrangement_id: str | None = Field(default=None, max_length=40)


class AcknowledgeRequest(BaseModel):
    action_taken: str = Field(min_length=1, max_length=500, examples=["called the customer"])


class AssignRequest(BaseModel):
    executive: str = Field(min_length=1, max_length=200)


def _terms(body: ArrangementTerms, account_number: str) -> commands.CreateArrangement:
    return commands.CreateArrangement(
        account_number=account_number,
        installments=body.installments,
        frequency=body.frequency,
        first_due_date=body.first_due_date,
        grace_days=body.grace_days,
        down_payment=body.down_payment,
        items=tuple(body.items) if body.items is not None else None,
        notes=body.notes,
        customer_initiated=body.customer_initiated,
        negotiation_seconds=body.negotiation_seconds,
    )


def _since(day: date | None, desk: Desk) -> datetime | None:
    return datetime.combine(day, time.min, tzinfo=desk.clock.zone) if day is not None else None


def router(sessions: async_sessionmaker[AsyncSession], desk: Desk) -> APIRouter:
    routes = APIRouter(tags=["collections"])

    async def arrangement_body(arrangement_id: str) -> dict[str, Any]:
        async with sessions() as session:
            return views.arrangement_view(await queries.arrangement(session, arrangement_id), desk.clock.today())

    # --- the worklist ---

    def worklist_filters(
        q: str | None,
        days_overdue_min: int | None,
        days_overdue_max: int | None,
        amount_min: Decimal | None,
        amount_max: Decimal | None,
        bucket: AgingBucket | None,
        has_plan: bool | None,
        plan_status: str | None,
        executive: str | None,
        contacted_since: date | None,
        not_contacted_since: date | None,
        disconnection: domain.Disconnection | None,
        sort: WorklistSort,
    ) -> WorklistFilters:
        status = None
        if plan_status:
            by_name = {s.value.casefold(): s for s in ArrangementStatus}
            if plan_status.casefold() not in by_name:
                raise Rejected("unknown_plan_status", "plan_status is an arrangement status", field="plan_status")
            status = by_name[plan_status.casefold()]
        return WorklistFilters(
            text=q.strip() if q and q.strip() else None,
            days_overdue_min=days_overdue_min,
            days_overdue_max=days_overdue_max,
            amount_min=amount_min,
            amount_max=amount_max,
            bucket=bucket,
            has_plan=has_plan,
            plan_status=status,
            executive=executive,
            contacted_since=_since(contacted_since, desk),
            not_contacted_since=_since(not_contacted_since, desk),
            disconnection=disconnection,
            sort=sort,
        )

    @routes.get("/collections/accounts")
    async def worklist(
        actor: Staff,
        q: Annotated[str | None, Query(max_length=100, description="Name or account, any part, any case.")] = None,
        days_overdue_min: Annotated[int | None, Query(ge=0)] = None,
        days_overdue_max: Annotated[int | None, Query(ge=0)] = None,
        amount_min: Annotated[Decimal | None, Query(ge=0)] = None,
        amount_max: Annotated[Decimal | None, Query(ge=0)] = None,
        bucket: AgingBucket | None = None,
        has_plan: bool | None = None,
        plan_status: str | None = None,
        executive: Annotated[str | None, Query(max_length=200)] = None,
        contacted_since: date | None = None,
        not_contacted_since: date | None = None,
        disconnection: domain.Disconnection | None = None,
        sort: WorklistSort = WorklistSort.DAYS_OVERDUE,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=300)] = None,
    ) -> dict[str, Any]:
        filters = worklist_filters(
            q, days_overdue_min, days_overdue_max, amount_min, amount_max, bucket, has_plan,
            plan_status, executive, contacted_since, not_contacted_since, disconnection, sort,
        )  # fmt: skip
        today = desk.clock.today()
        async with sessions() as session:
            rows, next_cursor = await queries.search_worklist(session, filters, today=today, limit=limit, cursor=cursor)
        return {"items": [views.worklist_row(r, today) for r in rows], "next_cursor": next_cursor, "as_of": str(today)}

    @routes.get("/collections/accounts/export", responses=OPENAPI_RESPONSES)
    async def worklist_export(
        actor: Collector,
        q: Annotated[str | None, Query(max_length=100)] = None,
        bucket: AgingBucket | None = None,
        has_plan: bool | None = None,
        executive: Annotated[str | None, Query(max_length=200)] = None,
        sort: WorklistSort = WorklistSort.DAYS_OVERDUE,
        format: ExportFormat = "csv",
    ) -> StreamingResponse:
        filters = worklist_filters(q, None, None, None, None, bucket, has_plan, None, executive, None, None, None, sort)
        today = desk.clock.today()
        lines = (views.worklist_line(r, today) async for r in queries.iter_worklist(sessions, filters, today=today))
        return await export_response(
            "collections-worklist", format, views.EXPORT_COLUMNS, lines, sheet_title="Worklist"
        )

    @routes.get("/collections/accounts/{account_number}")
    async def account(account_number: str, actor: Staff) -> dict[str, Any]:
        today = desk.clock.today()
        async with sessions() as session:
            found = await queries.account_details(session, account_number)
        return {
            **views.worklist_row(found, today),
            "items": [
                {
                    "payment_type": i["payment_type"],
                    "item_reference": i["item_reference"],
                    "description": i["description"],
                    "due_date": i["due_date"].isoformat() if i["due_date"] else None,
                    "owed": str(i["amount"] - i["paid"]),
                    "arrangement_id": i["arrangement_id"],
                }
                for i in found["items"]
            ],
            "arrangements": [views.arrangement_view(a, today) for a in found["arrangements"]],
            "activities": [views.activity_view(a) for a in found["activities"]],
        }

    @routes.put("/collections/accounts/{account_number}/executive")
    async def assign(account_number: str, body: AssignRequest, actor: Collector) -> dict[str, Any]:
        async with sessions() as session, session.begin():
            await activities.assign_executive(session, account_number, body.executive, actor=actor.name, desk=desk)
        return {"account_number": account_number, "executive": body.executive}

    @routes.get("/collections/accounts/{account_number}/disconnection")
    async def disconnection(account_number: str, actor: Staff) -> dict[str, Any]:
        """What a field system asks before disconnecting: the current answer, with the reason."""
        async with sessions() as session:
            return views.disconnection_view(await queries.account(session, account_number), desk.clock.today())

    @routes.get("/accounts/{account_number}/arrangement", tags=["self-service"])
    async def customer_arrangement(account_number: str, actor: AccountReader) -> dict[str, Any]:
        """The account's latest payment arrangement and the installment to pay next (both null if none)."""
        async with sessions() as session:
            found = await queries.latest_arrangement(session, account_number)
        return views.customer_arrangement_view(found, desk.clock.today())

    # --- arrangements ---

    @routes.post("/arrangements", status_code=201)
    async def create(body: ArrangementRequest, actor: Arranger, idempotency_key: IdempotencyKey) -> dict[str, Any]:
        async with sessions() as session, session.begin():
            arrangement_id = await commands.create_arrangement(
                session, _terms(body, body.account_number), actor=actor.name, idempotency_key=idempotency_key, desk=desk
            )
        return await arrangement_body(arrangement_id)

    @routes.get("/arrangements")
    async def list_arrangements(
        actor: Staff,
        status: str | None = None,
        account_number: str | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> dict[str, Any]:
        chosen = None
        if status:
            by_name = {s.value.casefold(): s for s in ArrangementStatus}
            if status.casefold() not in by_name:
                raise Rejected("unknown_status", "status is an arrangement status", field="status")
            chosen = by_name[status.casefold()]
        async with sessions() as session:
            rows = await queries.list_arrangements(session, status=chosen, account_number=account_number, limit=limit)
        return {"items": [views.arrangement_view(r, desk.clock.today()) for r in rows]}

    @routes.get("/arrangements/{arrangement_id}")
    async def details(arrangement_id: str, actor: Staff) -> dict[str, Any]:
        return await arrangement_body(arrangement_id)

    @routes.get("/arrangements/{arrangement_id}/history")
    async def arrangement_history(arrangement_id: str, actor: Staff) -> list[dict[str, Any]]:
        async with sessions() as session:
            await queries.arrangement(session, arrangement_id)
            return views.history_view(await queries.history(session, arrangement_id))

    async def awaiting(approval_id: str, arrangement_id: str, response: Response) -> dict[str, Any]:
        """202: the change waits for a billing manager; the arrangement is as it was."""
        response.status_code = 202
        return {**await arrangement_body(arrangement_id), "approval_id": approval_id, "approval_status": "Pending"}

    @routes.post("/arrangements/{arrangement_id}/modify", responses={202: {"description": WAITS}})
    async def modify(arrangement_id: str, body: ModifyRequest, actor: Arranger, response: Response) -> dict[str, Any]:
        command = rescheduling.ModifyArrangement(
            reason=body.reason,
            installments=body.installments,
            frequency=body.frequency,
            first_due_date=body.first_due_date,
            grace_days=body.grace_days,
            amounts=tuple(body.amounts),
        )
        async with sessions() as session, session.begin():
            waiting = await rescheduling.modify_arrangement(
                session, arrangement_id, command, actor=actor.name, desk=desk
            )
        if waiting is not None:
            return await awaiting(waiting, arrangement_id, response)
        return await arrangement_body(arrangement_id)

    @routes.post("/arrangements/{arrangement_id}/cancel")
    async def cancel(arrangement_id: str, body: ReasonRequest, actor: Arranger) -> dict[str, Any]:
        async with sessions() as session, session.begin():
            await rescheduling.cancel_arrangement(
                session, arrangement_id, reason=body.reason, actor=actor.name, desk=desk
            )
        return await arrangement_body(arrangement_id)

    @routes.post("/arrangements/{arrangement_id}/reage", status_code=201, responses={202: {"description": WAITS}})
    async def reage(
        arrangement_id: str, body: ReageRequest, actor: Arranger, idempotency_key: IdempotencyKey, response: Response
    ) -> dict[str, Any]:
        """A settlement plan for what is left of an Active or Broken arrangement; the old one keeps its history."""
        async with sessions() as session, session.begin():
            new_id = await rescheduling.reage_arrangement(
                session,
                arrangement_id,
                _terms(body, ""),
                reason=body.reason,
                actor=actor.name,
                idempotency_key=idempotency_key,
                desk=desk,
            )
        if rescheduling.is_approval(new_id):
            return await awaiting(new_id, arrangement_id, response)
        return await arrangement_body(new_id)

    # --- approvals (a billing manager, never the requester) ---

    @routes.get("/approvals", tags=["approvals"])
    async def approvals(actor: Manager) -> dict[str, Any]:
        async with sessions() as session:
            return {"items": [a.as_json() for a in await queries.pending_approvals(session)]}

    @routes.post("/approvals/{approval_id}/{decision}", tags=["approvals"])
    async def decide(
        approval_id: str, decision: Literal["approve", "reject"], actor: Manager, body: DecisionRequest | None = None
    ) -> dict[str, Any]:
        async with sessions() as session, session.begin():
            decided, shown = await rescheduling.decide_approval(
                session,
                approval_id,
                approver=actor.name,
                approve=decision == "approve",
                reason=body.reason if body else None,
                desk=desk,
            )
        return {**decided.as_json(), "arrangement": await arrangement_body(shown)}

    # --- activities, follow-ups, alerts ---

    @routes.post("/activities", status_code=201)
    async def log(body: ActivityRequest, actor: Arranger, idempotency_key: IdempotencyKey) -> dict[str, Any]:
        command = activities.LogActivity(**body.model_dump())
        async with sessions() as session, session.begin():
            activity_id = await activities.log_activity(
                session, command, executive=actor.name, idempotency_key=idempotency_key, desk=desk
            )
        async with sessions() as session:
            rows = await queries.activities_of(session, body.account_number, limit=200)
        return next(views.activity_view(r) for r in rows if r["activity_id"] == activity_id)

    @routes.get("/activities")
    async def list_activities(
        account_number: str, actor: Staff, limit: Annotated[int, Query(ge=1, le=200)] = 50
    ) -> dict[str, Any]:
        async with sessions() as session:
            return {
                "items": [
                    views.activity_view(r) for r in await queries.activities_of(session, account_number, limit=limit)
                ]
            }

    @routes.get("/activities/follow-ups")
    async def follow_ups(
        actor: Collector,
        executive: str | None = None,
        due_by: date | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 100,
    ) -> dict[str, Any]:
        """An executive's follow-up queue (their own; a billing manager sees anyone's or everyone's)."""
        manager = Role.BILLING_MANAGER in actor.roles or Role.ADMIN in actor.roles
        whose = executive or (None if manager else actor.name)
        if whose is not None:
            activities.check_may_act_for(actor.name, whose, manager=manager)
        async with sessions() as session:
            rows = await queries.follow_ups(session, whose, due_by=due_by or desk.clock.today(), limit=limit)
        return {"items": [views.activity_view(r) for r in rows]}

    @routes.post("/activities/{activity_id}/follow-up-done")
    async def follow_up_done(activity_id: str, actor: Collector) -> dict[str, str]:
        async with sessions() as session, session.begin():
            await activities.complete_follow_up(session, activity_id, executive=actor.name)
        return {"activity_id": activity_id, "follow_up": "done"}

    @routes.get("/alerts")
    async def alerts(
        actor: Collector, executive: str | None = None, limit: Annotated[int, Query(ge=1, le=200)] = 100
    ) -> dict[str, Any]:
        manager = Role.BILLING_MANAGER in actor.roles or Role.ADMIN in actor.roles
        whose = executive or (None if manager else actor.name)
        if whose is not None:
            activities.check_may_act_for(actor.name, whose, manager=manager)
        async with sessions() as session:
            return {"items": [views.alert_view(r) for r in await queries.open_alerts(session, whose, limit=limit)]}

    @routes.post("/alerts/{alert_id}/acknowledge")
    async def acknowledge(alert_id: str, body: AcknowledgeRequest, actor: Collector) -> dict[str, str]:
        async with sessions() as session, session.begin():
            await activities.acknowledge_alert(
                session, alert_id, executive=actor.name, action_taken=body.action_taken, desk=desk
            )
        return {"alert_id": alert_id, "action_taken": body.action_taken}

    # --- reports ---

    @routes.get("/collections/reports")
    async def report(
        actor: Collector, period: Annotated[str | None, Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")] = None
    ) -> dict[str, Any]:
        today = desk.clock.today()
        async with sessions() as session:
            found = await queries.report(session, period=period or today.strftime("%Y-%m"), today=today)
        return views.report_view(found)

    @routes.get("/collections/reports/recovered/export", responses=OPENAPI_RESPONSES)
    async def recovered_export(
        actor: Collector,
        period: Annotated[str | None, Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")] = None,
        format: ExportFormat = "csv",
    ) -> StreamingResponse:
        chosen = period or desk.clock.today().strftime("%Y-%m")
        lines = (views.recovery_line(r) async for r in queries.iter_recoveries(sessions, period=chosen))
        return await export_response(
            "collections-recovered", format, views.RECOVERY_COLUMNS, lines, sheet_title="Recovered"
        )

    return routes
