"""Receivables: billing's events as one receivable-item shape, for every service that keeps what is owed. No I/O.

Each service keeps its own table (schemas stay separate); this module decides what an item is, how it is
described, and how an installment's reference is written and read, so all of them agree.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any

from shared.contracts import Envelope, parse_data
from shared.contracts.events import (
    AccountUpserted,
    BillIssued,
    InstallmentPlanCreated,
    PaymentType,
    ServiceChargeIssued,
)
from shared.errors import Rejected

# The billing events that make receivable items (`account.upserted` makes an account, see `billing_account`).
ITEM_EVENT_TYPES = ("bill.issued", "service_charge.issued", "installment_plan.created")


@dataclass(frozen=True)
class InstallmentReference:
    """Which installment of which plan: written `PLAN/n`."""

    plan_id: str
    number: int

    def __str__(self) -> str:
        return installment_reference(self.plan_id, self.number)


def installment_reference(plan_id: str, number: int) -> str:
    """The item reference of installment `number` of a plan, e.g. `PP-2025-0034/2`."""
    if not plan_id:
        raise Rejected("invalid_installment_reference", "an installment needs its plan id", field="item_reference")
    if number < 1:
        raise Rejected("invalid_installment_reference", "installments are numbered from 1", field="item_reference")
    return f"{plan_id}/{number}"


def parse_installment_reference(reference: str) -> InstallmentReference:
    """Read `PLAN/n` back; the number is after the last `/`, so a plan id may itself contain one."""
    plan_id, slash, number = reference.rpartition("/")
    # isdecimal() but ASCII only: int() would also take "٣" or " 3", which no reference was ever written with.
    if not slash or not plan_id or not number.isascii() or not number.isdecimal() or int(number) < 1:
        raise Rejected(
            "invalid_installment_reference",
            f"{reference!r} is not an installment reference (PLAN-ID/number)",
            field="item_reference",
        )
    return InstallmentReference(plan_id, int(number))


@dataclass(frozen=True)
class ReceivableItem:
    """A bill, service charge or installment billing says an account owes."""

    kind: PaymentType
    reference: str  # invoice number, service charge id, or `PLAN/n`
    account_number: str
    description: str
    amount: Decimal
    currency: str
    issued_on: date
    due_date: date
    # What the item's "period or date" column shows: the billing month, the service date, the due date.
    period_or_date: str

    @property
    def installment(self) -> InstallmentReference | None:
        """Plan and number of an installment; None for bills and service charges."""
        return parse_installment_reference(self.reference) if self.kind is PaymentType.INSTALLMENT else None

    def as_row(self, *columns: str) -> dict[str, Any]:
        """The item in the column names the services' tables use (`payment_type`, `item_reference`, ...).

        With `columns`, only those: each service keeps the part of an item its own table needs.
        """
        row: dict[str, Any] = {
            "payment_type": self.kind.value,
            "item_reference": self.reference,
            "account_number": self.account_number,
            "description": self.description,
            "amount": self.amount,
            "currency": self.currency,
            "issued_on": self.issued_on,
            "due_date": self.due_date,
            "period_or_date": self.period_or_date,
        }
        if not columns:
            return row
        unknown = set(columns) - row.keys()
        if unknown:
            raise KeyError(f"a receivable item has no {', '.join(sorted(unknown))}")
        return {name: row[name] for name in columns}


def from_bill(bill: BillIssued) -> ReceivableItem:
    """A bill for one billing month."""
    return ReceivableItem(
        kind=PaymentType.BILL,
        reference=bill.invoice_number,
        account_number=bill.account_number,
        description=f"Bill {bill.billing_period}",
        amount=bill.amount.amount,
        currency=bill.amount.currency,
        issued_on=bill.issued_on,
        due_date=bill.due_date,
        period_or_date=bill.billing_period,
    )


def from_service_charge(charge: ServiceChargeIssued) -> ReceivableItem:
    """A one-off service charge (reconnection, meter test ...), issued on its service date."""
    return ReceivableItem(
        kind=PaymentType.SERVICE,
        reference=charge.service_charge_id,
        account_number=charge.account_number,
        description=charge.description,
        amount=charge.amount.amount,
        currency=charge.amount.currency,
        issued_on=charge.service_date,
        due_date=charge.due_date,
        period_or_date=charge.service_date.isoformat(),
    )


def from_installment_plan(plan: InstallmentPlanCreated) -> tuple[ReceivableItem, ...]:
    """Every installment of a plan, each its own item, all issued the day the plan was made."""
    return tuple(
        ReceivableItem(
            kind=PaymentType.INSTALLMENT,
            reference=installment_reference(plan.plan_id, installment.number),
            account_number=plan.account_number,
            description=f"Plan {plan.plan_id} installment {installment.number}",
            amount=installment.amount.amount,
            currency=installment.amount.currency,
            issued_on=plan.created_on,
            due_date=installment.due_date,
            period_or_date=installment.due_date.isoformat(),
        )
        for installment in plan.installments
    )


def receivable_items(envelope: Envelope) -> tuple[ReceivableItem, ...]:
    """The items one billing event makes: one for a bill or service charge, one per installment of a plan."""
    if envelope.type == "bill.issued":
        return (from_bill(parse_data(envelope, BillIssued)),)
    if envelope.type == "service_charge.issued":
        return (from_service_charge(parse_data(envelope, ServiceChargeIssued)),)
    if envelope.type == "installment_plan.created":
        return from_installment_plan(parse_data(envelope, InstallmentPlanCreated))
    raise Rejected("not_a_receivable", f"a {envelope.type} event makes no receivable item", field="type")


@dataclass(frozen=True)
class BillingAccount:
    """An account as billing last described it; `reported_balance` is billing's own figure, if it sent one."""

    account_number: str
    name: str
    service_address: str
    phone: str | None
    email: str | None
    currency: str
    reported_balance: Decimal | None

    def as_row(self) -> dict[str, Any]:
        """The account in the column names of the services' account tables."""
        return {
            "account_number": self.account_number,
            "name": self.name,
            "service_address": self.service_address,
            "phone": self.phone,
            "email": self.email,
            "currency": self.currency,
        }


def billing_account(account: AccountUpserted) -> BillingAccount:
    """The account an `account.upserted` event describes."""
    return BillingAccount(
        account_number=account.account_number,
        name=account.name,
        service_address=account.service_address,
        phone=account.phone,
        email=account.email,
        currency=account.currency,
        reported_balance=account.current_balance.amount if account.current_balance is not None else None,
    )


# What billing may change when it re-issues an item; the amount, account and currency of an item stay as first issued.
REISSUE_CHANGES = ("description", "period_or_date", "issued_on", "due_date")


def latest_accounts(accounts: Iterable[BillingAccount]) -> list[BillingAccount]:
    """Several descriptions of accounts as one each, as if applied in order: the last description wins, and the
    balance billing last reported (a description without one keeps the earlier figure). First-seen order."""
    merged: dict[str, BillingAccount] = {}
    for account in accounts:
        earlier = merged.get(account.account_number)
        if earlier is not None and account.reported_balance is None:
            account = replace(account, reported_balance=earlier.reported_balance)
        merged[account.account_number] = account
    return list(merged.values())


def latest_items(items: Iterable[ReceivableItem], changes: Collection[str] = REISSUE_CHANGES) -> list[ReceivableItem]:
    """Several issues of items as one each, as if applied in order: the first issue, with the `changes` fields of
    the last one (what an upsert that updates only those fields would leave). First-seen order."""
    merged: dict[tuple[PaymentType, str], ReceivableItem] = {}
    for item in items:
        key = (item.kind, item.reference)
        earlier = merged.get(key)
        merged[key] = item if earlier is None else replace(earlier, **{name: getattr(item, name) for name in changes})
    return list(merged.values())
