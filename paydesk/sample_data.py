"""Reference data as the billing system would publish it: the seed's sample consumer, and many more.

Both go through Kafka (`billing.receivables.v1`), exactly like a real billing system's events.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal

from shared.contracts import Envelope, new_envelope
from shared.contracts.events import (
    AccountUpserted,
    BillIssued,
    Installment,
    InstallmentPlanCreated,
    Money,
    ServiceChargeIssued,
)

SOURCE = "billing"


def _usd(amount: str) -> Money:
    return Money(amount=Decimal(amount), currency="USD")


def seed_sample() -> list[Envelope]:
    """John Doe (WU-10001) with the bills, service charges and installment plan of the payments seed."""
    account = "WU-10001"
    payloads = [
        (
            "account.upserted",
            AccountUpserted(
                account_number=account,
                name="John Doe",
                service_address="123 Main Street, Cityville",
                phone="(555) 123-4567",
                email="john.doe@email.com",
                current_balance=_usd("245.75"),
            ),
        ),
        (
            "bill.issued",
            BillIssued(
                account_number=account,
                invoice_number="INV-2025-001234",
                billing_period="2025-03",
                amount=_usd("145.50"),
                issued_on=date(2025, 3, 31),
                due_date=date(2025, 4, 15),
            ),
        ),
        (
            "bill.issued",
            BillIssued(
                account_number=account,
                invoice_number="INV-2025-001567",
                billing_period="2025-04",
                amount=_usd("152.25"),
                issued_on=date(2025, 4, 30),
                due_date=date(2025, 5, 15),
            ),
        ),
        (
            "service_charge.issued",
            ServiceChargeIssued(
                account_number=account,
                service_charge_id="SC-2025-0001",
                description="Reconnection Fee",
                amount=_usd("75.00"),
                service_date=date(2025, 4, 18),
                due_date=date(2025, 5, 18),
            ),
        ),
        (
            "service_charge.issued",
            ServiceChargeIssued(
                account_number=account,
                service_charge_id="SC-2025-0002",
                description="Late Fee",
                amount=_usd("25.00"),
                service_date=date(2025, 4, 10),
                due_date=date(2025, 5, 10),
            ),
        ),
        (
            "installment_plan.created",
            InstallmentPlanCreated(
                account_number=account,
                plan_id="PP-2025-0034",
                created_on=date(2025, 3, 15),
                installments=[
                    Installment(number=n, amount=_usd("67.50"), due_date=date(2025, 3 + n, 15)) for n in (1, 2, 3)
                ],
            ),
        ),
    ]
    return [new_envelope(kind, source=SOURCE, subject=account, data=data) for kind, data in payloads]


_FIRST = ["Ava", "Liam", "Noah", "Emma", "Mia", "Lucas", "Zoe", "Omar", "Priya", "Chen", "Sofia", "Diego"]
_LAST = ["Smith", "Garcia", "Nguyen", "Patel", "Kim", "Okafor", "Rossi", "Müller", "Haddad", "Silva"]
_STREETS = ["Main Street", "Oak Avenue", "River Road", "Hill Lane", "Station Road", "Park Drive"]


def generate_accounts(count: int, *, seed: int = 7, today: date | None = None) -> Iterator[Envelope]:
    """`count` realistic accounts, each with a current bill and sometimes a service charge."""
    rng = random.Random(seed)
    today = today or date.today()
    for n in range(count):
        account = f"WU-{20001 + n}"
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        yield new_envelope(
            "account.upserted",
            source=SOURCE,
            subject=account,
            data=AccountUpserted(
                account_number=account,
                name=f"{first} {last}",
                service_address=f"{rng.randint(1, 999)} {rng.choice(_STREETS)}, Cityville",
                phone=f"(555) {rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
                email=f"{first}.{last}{n}@example.com".lower(),
            ),
        )
        issued = today - timedelta(days=rng.randint(1, 25))
        yield new_envelope(
            "bill.issued",
            source=SOURCE,
            subject=account,
            data=BillIssued(
                account_number=account,
                invoice_number=f"INV-{issued.year}-{100000 + n}",
                billing_period=f"{issued.year}-{issued.month:02d}",
                amount=_usd(f"{rng.randint(2000, 40000) / 100:.2f}"),
                issued_on=issued,
                due_date=issued + timedelta(days=15),
            ),
        )
        if rng.random() < 0.2:
            yield new_envelope(
                "service_charge.issued",
                source=SOURCE,
                subject=account,
                data=ServiceChargeIssued(
                    account_number=account,
                    service_charge_id=f"SC-{issued.year}-{100000 + n}",
                    description=rng.choice(["Reconnection Fee", "Late Fee", "Meter Test"]),
                    amount=_usd(rng.choice(["25.00", "75.00", "40.00"])),
                    service_date=issued,
                    due_date=issued + timedelta(days=30),
                ),
            )
