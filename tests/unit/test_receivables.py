"""Receivables: billing's events become one item shape; the installment reference is written and read here."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from shared.contracts import Envelope, new_envelope
from shared.contracts.events import (
    AccountUpserted,
    BillIssued,
    Installment,
    InstallmentPlanCreated,
    Money,
    PaymentType,
    ServiceChargeIssued,
)
from shared.errors import Rejected
from shared.receivables import (
    REISSUE_CHANGES,
    BillingAccount,
    InstallmentReference,
    ReceivableItem,
    billing_account,
    from_bill,
    from_installment_plan,
    from_service_charge,
    installment_reference,
    latest_accounts,
    latest_items,
    parse_installment_reference,
    receivable_items,
)

BILL = BillIssued(
    account_number="WU-10001",
    invoice_number="INV-2025-001234",
    billing_period="2025-03",
    amount=Money(amount=Decimal("145.50"), currency="USD"),
    issued_on=date(2025, 3, 1),
    due_date=date(2025, 3, 21),
)
CHARGE = ServiceChargeIssued(
    account_number="WU-10001",
    service_charge_id="SC-2025-0001",
    description="Reconnection Fee",
    amount=Money(amount=Decimal("35.00"), currency="USD"),
    service_date=date(2025, 4, 18),
    due_date=date(2025, 5, 2),
)
PLAN = InstallmentPlanCreated(
    account_number="WU-10002",
    plan_id="PP-2025-0034",
    created_on=date(2025, 2, 10),
    installments=[
        Installment(number=1, amount=Money(amount=Decimal("100.00"), currency="EUR"), due_date=date(2025, 3, 1)),
        Installment(number=2, amount=Money(amount=Decimal("99.99"), currency="EUR"), due_date=date(2025, 4, 1)),
    ],
)


def envelope(event_type: str, data: BaseModel) -> Envelope:
    return new_envelope(event_type, source="billing", subject="WU-10001", data=data)


class TestInstallmentReference:
    def test_is_the_plan_id_a_slash_and_the_number(self) -> None:
        assert installment_reference("PP-2025-0034", 3) == "PP-2025-0034/3"

    def test_reads_back_what_it_wrote(self) -> None:
        assert parse_installment_reference(installment_reference("PP-2025-0034", 12)) == InstallmentReference(
            "PP-2025-0034", 12
        )

    def test_the_number_is_after_the_last_slash(self) -> None:
        assert parse_installment_reference("PLAN/A/7") == InstallmentReference("PLAN/A", 7)

    def test_prints_as_its_reference(self) -> None:
        assert str(InstallmentReference("PP-1", 2)) == "PP-1/2"

    @pytest.mark.parametrize(
        "reference", ["PP-1", "PP-1/", "/3", "PP-1/0", "PP-1/-1", "PP-1/x", "PP-1/ 3", "PP-1/٣", "PP-1/3.0", ""]
    )
    def test_anything_else_is_refused_naming_the_item_reference(self, reference: str) -> None:
        with pytest.raises(Rejected) as refused:
            parse_installment_reference(reference)
        assert (refused.value.code, refused.value.field) == ("invalid_installment_reference", "item_reference")

    @pytest.mark.parametrize(("plan_id", "number"), [("", 1), ("PP-1", 0), ("PP-1", -2)])
    def test_is_never_written_without_a_plan_or_with_a_number_below_one(self, plan_id: str, number: int) -> None:
        with pytest.raises(Rejected) as refused:
            installment_reference(plan_id, number)
        assert refused.value.code == "invalid_installment_reference"


class TestBill:
    def test_becomes_one_bill_item_for_its_billing_month(self) -> None:
        assert from_bill(BILL) == ReceivableItem(
            kind=PaymentType.BILL,
            reference="INV-2025-001234",
            account_number="WU-10001",
            description="Bill 2025-03",
            amount=Decimal("145.50"),
            currency="USD",
            issued_on=date(2025, 3, 1),
            due_date=date(2025, 3, 21),
            period_or_date="2025-03",
        )

    def test_has_no_installment(self) -> None:
        assert from_bill(BILL).installment is None


class TestServiceCharge:
    def test_becomes_one_service_item_issued_on_its_service_date(self) -> None:
        assert from_service_charge(CHARGE) == ReceivableItem(
            kind=PaymentType.SERVICE,
            reference="SC-2025-0001",
            account_number="WU-10001",
            description="Reconnection Fee",
            amount=Decimal("35.00"),
            currency="USD",
            issued_on=date(2025, 4, 18),
            due_date=date(2025, 5, 2),
            period_or_date="2025-04-18",
        )


class TestInstallmentPlan:
    def test_becomes_one_item_per_installment_in_plan_order(self) -> None:
        first, second = from_installment_plan(PLAN)
        assert first == ReceivableItem(
            kind=PaymentType.INSTALLMENT,
            reference="PP-2025-0034/1",
            account_number="WU-10002",
            description="Plan PP-2025-0034 installment 1",
            amount=Decimal("100.00"),
            currency="EUR",
            issued_on=date(2025, 2, 10),
            due_date=date(2025, 3, 1),
            period_or_date="2025-03-01",
        )
        assert (second.reference, second.amount, second.due_date) == (
            "PP-2025-0034/2",
            Decimal("99.99"),
            date(2025, 4, 1),
        )

    def test_each_item_knows_its_plan_and_number(self) -> None:
        assert [i.installment for i in from_installment_plan(PLAN)] == [
            InstallmentReference("PP-2025-0034", 1),
            InstallmentReference("PP-2025-0034", 2),
        ]


class TestReceivableItems:
    @pytest.mark.parametrize(
        ("event_type", "data", "references"),
        [
            ("bill.issued", BILL, ["INV-2025-001234"]),
            ("service_charge.issued", CHARGE, ["SC-2025-0001"]),
            ("installment_plan.created", PLAN, ["PP-2025-0034/1", "PP-2025-0034/2"]),
        ],
    )
    def test_each_billing_event_makes_its_items(self, event_type: str, data: BaseModel, references: list[str]) -> None:
        assert [i.reference for i in receivable_items(envelope(event_type, data))] == references

    def test_an_event_that_is_not_a_receivable_is_refused(self) -> None:
        account = AccountUpserted(account_number="WU-1", name="J", service_address="1 Main St")
        with pytest.raises(Rejected) as refused:
            receivable_items(envelope("account.upserted", account))
        assert refused.value.code == "not_a_receivable"

    def test_a_malformed_payload_is_a_validation_error(self) -> None:
        broken = new_envelope("bill.issued", source="billing", subject="WU-1", data={"account_number": "WU-1"})
        with pytest.raises(ValidationError):
            receivable_items(broken)

    def test_amounts_stay_decimal(self) -> None:
        for item in receivable_items(envelope("installment_plan.created", PLAN)):
            assert isinstance(item.amount, Decimal)


class TestAsRow:
    def test_uses_the_services_column_names(self) -> None:
        assert from_bill(BILL).as_row() == {
            "payment_type": "bill",
            "item_reference": "INV-2025-001234",
            "account_number": "WU-10001",
            "description": "Bill 2025-03",
            "amount": Decimal("145.50"),
            "currency": "USD",
            "issued_on": date(2025, 3, 1),
            "due_date": date(2025, 3, 21),
            "period_or_date": "2025-03",
        }

    def test_gives_only_the_columns_asked_for(self) -> None:
        row = from_service_charge(CHARGE).as_row("payment_type", "item_reference", "due_date", "amount", "currency")
        assert row == {
            "payment_type": "service",
            "item_reference": "SC-2025-0001",
            "due_date": date(2025, 5, 2),
            "amount": Decimal("35.00"),
            "currency": "USD",
        }

    def test_an_unknown_column_is_a_programming_error(self) -> None:
        with pytest.raises(KeyError, match="outstanding"):
            from_bill(BILL).as_row("amount", "outstanding")


class TestBillingAccount:
    def test_keeps_billings_balance_when_it_sends_one(self) -> None:
        account = AccountUpserted(
            account_number="WU-10001",
            name="John Doe",
            service_address="123 Main Street",
            phone="(555) 123-4567",
            current_balance=Money(amount=Decimal("245.50"), currency="USD"),
        )
        shown = billing_account(account)
        assert shown.reported_balance == Decimal("245.50")
        assert shown.as_row() == {
            "account_number": "WU-10001",
            "name": "John Doe",
            "service_address": "123 Main Street",
            "phone": "(555) 123-4567",
            "email": None,
            "currency": "USD",
        }

    def test_without_a_balance_reports_none(self) -> None:
        account = AccountUpserted(account_number="WU-1", name="J", service_address="1 Main St")
        assert billing_account(account).reported_balance is None


# --- a batch of billing events as one row each: the same as applying them in order ---

accounts_strategy = st.lists(
    st.builds(
        BillingAccount,
        account_number=st.sampled_from(["A", "B", "C"]),
        name=st.sampled_from(["Ada", "Grace", "Alan"]),
        service_address=st.just("1 Main St"),
        phone=st.none() | st.just("555"),
        email=st.none(),
        currency=st.just("USD"),
        reported_balance=st.none() | st.decimals(min_value=0, max_value=1000, places=2),
    ),
    max_size=12,
)


@given(accounts_strategy)
def test_latest_accounts_is_what_upserting_one_by_one_leaves(described: list[BillingAccount]) -> None:
    """The model: each description replaces the last, and one without a balance keeps the earlier balance."""
    applied: dict[str, BillingAccount] = {}
    for account in described:
        earlier = applied.get(account.account_number)
        balance = account.reported_balance
        if balance is None and earlier is not None:
            balance = earlier.reported_balance
        applied[account.account_number] = replace(account, reported_balance=balance)
    merged = latest_accounts(described)
    assert merged == list(applied.values())
    assert len({a.account_number for a in merged}) == len(merged)


items_strategy = st.lists(
    st.builds(
        ReceivableItem,
        kind=st.sampled_from([PaymentType.BILL, PaymentType.SERVICE]),
        reference=st.sampled_from(["R1", "R2"]),
        account_number=st.sampled_from(["A", "B"]),
        description=st.sampled_from(["first", "second", "third"]),
        amount=st.decimals(min_value=1, max_value=100, places=2),
        currency=st.just("USD"),
        issued_on=st.dates(date(2026, 1, 1), date(2026, 12, 31)),
        due_date=st.dates(date(2026, 1, 1), date(2026, 12, 31)),
        period_or_date=st.sampled_from(["2026-01", "2026-02"]),
    ),
    max_size=12,
)


@given(items_strategy, st.sampled_from([REISSUE_CHANGES, ("description",), ()]))
def test_latest_items_is_what_an_upsert_of_the_changing_fields_leaves(
    issued: list[ReceivableItem], changes: tuple[str, ...]
) -> None:
    """The model: the first issue inserts the item; a later one updates only the `changes` fields."""
    applied: dict[tuple[PaymentType, str], ReceivableItem] = {}
    for item in issued:
        key = (item.kind, item.reference)
        earlier = applied.get(key)
        applied[key] = item if earlier is None else replace(earlier, **{f: getattr(item, f) for f in changes})
    assert latest_items(issued, changes) == list(applied.values())


def test_a_reissued_bill_keeps_its_first_amount_and_takes_the_new_due_date() -> None:
    first = from_bill(BILL)
    again = replace(first, amount=Decimal("999.00"), due_date=date(2025, 4, 30), description="Bill 2025-03 (again)")
    (merged,) = latest_items([first, again])
    assert (merged.amount, merged.due_date, merged.description) == (
        Decimal("145.50"),
        date(2025, 4, 30),
        "Bill 2025-03 (again)",
    )
