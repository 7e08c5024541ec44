"""Payouts' payees: validated once (payout method through schwifty), created, updated, imported from CSV/XLSX
all or nothing with a row-by-row report, and made for customers owed a refund."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.payouts import domain, imports
from services.payouts.domain import PayeeStatus
from services.payouts.storage import audit_log, idempotency_keys, payee_number_seq, payees
from shared import audit, idempotency
from shared.errors import Conflict, NotFound, Rejected


@dataclass(frozen=True)
class PayeeDraft:
    name: str
    payee_type: str
    country: str
    payout_currency: str
    method: str | None = None
    stripe_account: str | None = None
    iban: str | None = None
    bic: str | None = None
    tax_id: str | None = None
    email: str | None = None
    payee_group: str | None = None
    schedule: str = domain.Schedule.MONTHLY
    agent_channel: str | None = None
    agent_user: str | None = None
    account_number: str | None = None
    external_id: str | None = None


def validate_payee(draft: PayeeDraft) -> PayeeDraft:
    """Every field checked, each error naming its field; the payout method is required."""
    if not draft.name.strip():
        raise Rejected("required", "name is required", field="name")
    try:
        payee_type = domain.PayeeType(draft.payee_type.strip().lower())
    except ValueError:
        raise Rejected("unknown_payee_type", "payee_type is agent, partner or customer", field="payee_type") from None
    try:
        schedule = domain.Schedule(draft.schedule.strip().lower())
    except ValueError:
        raise Rejected("unknown_schedule", "schedule is monthly, weekly or on_request", field="schedule") from None
    details = domain.payout_details(draft.method, stripe_account=draft.stripe_account, iban=draft.iban, bic=draft.bic)
    if payee_type is domain.PayeeType.CUSTOMER and not draft.account_number:
        raise Rejected("required", "a customer payee needs its account number", field="account_number")
    if draft.agent_user and not draft.agent_channel:
        raise Rejected("required", "an agent user belongs to a channel", field="agent_channel")
    return replace(
        draft,
        name=draft.name.strip(),
        payee_type=payee_type.value,
        country=domain.country_code(draft.country),
        payout_currency=domain.currency_code(draft.payout_currency, field="payout_currency"),
        method=details.method.value if details.method else None,
        stripe_account=details.stripe_account,
        iban=details.iban,
        bic=details.bic,
        schedule=schedule.value,
    )


async def _check_unique_links(session: AsyncSession, draft: PayeeDraft, *, except_id: str | None = None) -> None:
    c = payees.c
    if draft.agent_channel:
        taken = (
            await session.execute(
                select(c.payee_id).where(
                    c.agent_channel == draft.agent_channel,
                    func.coalesce(c.agent_user, "") == (draft.agent_user or ""),
                    c.payee_id != (except_id or ""),
                )
            )
        ).scalar_one_or_none()
        if taken:
            raise Conflict("agent_link_taken", f"payee {taken} already earns for this channel", field="agent_channel")
    if draft.payee_type == domain.PayeeType.CUSTOMER and draft.account_number:
        taken = (
            await session.execute(
                select(c.payee_id).where(
                    c.account_number == draft.account_number,
                    c.payee_type == "customer",
                    c.payee_id != (except_id or ""),
                )
            )
        ).scalar_one_or_none()
        if taken:
            raise Conflict("account_taken", f"payee {taken} already refunds this account", field="account_number")


async def _insert_payee(session: AsyncSession, draft: PayeeDraft, *, actor: str, status: PayeeStatus) -> str:
    seq = int((await session.execute(select(payee_number_seq.next_value()))).scalar_one())
    payee_id = f"PE-{10000 + seq}"
    now = datetime.now(UTC)
    row = {**asdict(draft), "payee_id": payee_id, "seq": seq, "status": status.value}
    await session.execute(payees.insert().values(**row, created_by=actor, created_at=now, updated_at=now))
    await audit.record(session, audit_log, actor=actor, action="payee.created", subject=payee_id, after=row, at=now)
    return payee_id


async def create_payee(session: AsyncSession, draft: PayeeDraft, *, actor: str, idempotency_key: str) -> str:
    """A payee with a validated payout method, once per key; returns its id."""
    checked = validate_payee(draft)

    async def run() -> str:
        await _check_unique_links(session, checked)
        return await _insert_payee(session, checked, actor=actor, status=PayeeStatus.ACTIVE)

    return await idempotency.once(
        session, idempotency_keys, operation="create_payee", key=idempotency_key, request=checked, run=run
    )


async def update_payee(session: AsyncSession, payee_id: str, draft: PayeeDraft, *, status: str, actor: str) -> None:
    """Replace a payee's details (its id stays); an incomplete payee with a method becomes active."""
    before = (await session.execute(select(payees).where(payees.c.payee_id == payee_id).with_for_update())).first()
    if before is None:
        raise NotFound("payee_not_found", f"no payee {payee_id}", field="payee_id")
    checked = validate_payee(draft)
    try:
        chosen = PayeeStatus(status)
    except ValueError:
        raise Rejected("unknown_status", "status is Active or Suspended", field="status") from None
    await _check_unique_links(session, checked, except_id=payee_id)
    values = {**asdict(checked), "status": chosen.value, "updated_at": datetime.now(UTC)}
    await session.execute(update(payees).where(payees.c.payee_id == payee_id).values(**values))
    await audit.record(
        session,
        audit_log,
        actor=actor,
        action="payee.updated",
        subject=payee_id,
        before=dict(before._mapping),
        after=values,
    )


def _payee_from_row(row: dict[str, str]) -> PayeeDraft:
    return validate_payee(
        PayeeDraft(
            name=imports.required(row, "name"),
            payee_type=imports.required(row, "payee_type"),
            country=imports.required(row, "country"),
            payout_currency=imports.required(row, "payout_currency"),
            method=imports.optional(row, "method"),
            stripe_account=imports.optional(row, "stripe_account"),
            iban=imports.optional(row, "iban"),
            bic=imports.optional(row, "bic"),
            tax_id=imports.optional(row, "tax_id"),
            email=imports.optional(row, "email"),
            payee_group=imports.optional(row, "payee_group"),
            schedule=imports.optional(row, "schedule") or domain.Schedule.MONTHLY,
            agent_channel=imports.optional(row, "agent_channel"),
            agent_user=imports.optional(row, "agent_user"),
            account_number=imports.optional(row, "account_number"),
            external_id=imports.required(row, "external_id"),
        )
    )


async def import_payees(
    session: AsyncSession, data: bytes, *, actor: str, max_bytes: int, dry_run: bool
) -> dict[str, Any]:
    """Payees from CSV/XLSX, all or nothing, idempotent by `external_id`; the report names each bad row and field."""
    parsed, report = imports.validate_rows(imports.read_table(data, max_bytes=max_bytes), _payee_from_row)
    existing = set(
        (
            await session.execute(
                select(payees.c.external_id).where(payees.c.external_id.in_([d.external_id for _, d in parsed]))
            )
        ).scalars()
    )
    seen: set[str] = set()
    fresh: list[tuple[int, PayeeDraft]] = []
    for number, draft in parsed:
        assert draft.external_id is not None
        if draft.external_id in seen:
            report.errors.append(imports.RowError(number, "external_id", "duplicate", "external_id twice in the file"))
            report.valid -= 1
            continue
        seen.add(draft.external_id)
        if draft.external_id not in existing:
            fresh.append((number, draft))
    created: list[str] = []
    if not report.errors and not dry_run:
        for number, draft in fresh:
            try:
                await _check_unique_links(session, draft)
            except Rejected as exc:
                report.errors.append(imports.RowError(number, exc.field, exc.code, exc.detail))
        if not report.errors:
            for _, draft in fresh:
                created.append(await _insert_payee(session, draft, actor=actor, status=PayeeStatus.ACTIVE))
    return report.as_json(created=created, unchanged=len(parsed) - len(fresh), dry_run=dry_run)


async def customer_payee(session: AsyncSession, account_number: str, name: str, currency: str) -> str:
    """The payee refunds of `account_number` go to, made Incomplete (no method yet) on first need."""
    found = (
        await session.execute(
            select(payees.c.payee_id).where(
                payees.c.account_number == account_number, payees.c.payee_type == "customer"
            )
        )
    ).scalar_one_or_none()
    if found is not None:
        return str(found)
    draft = PayeeDraft(
        name=name, payee_type="customer", country="US", payout_currency=currency, account_number=account_number
    )
    return await _insert_payee(session, draft, actor=domain.SYSTEM, status=PayeeStatus.INCOMPLETE)
