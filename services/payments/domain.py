"""Pure payment rules: numbering, amount analysis, cash change, allocation. No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from shared.errors import Rejected


class Outcome(StrEnum):
    EXACT = "exact"
    OVER = "over"
    UNDER = "under"


@dataclass(frozen=True)
class NumberFormat:
    """How a document number looks, e.g. prefix `PAY-`, with year, padded to 6: `PAY-2025-004521`."""

    prefix: str
    with_year: bool
    padding: int
    start: int

    def render(self, sequence_value: int, year: int) -> str:
        number = str(self.start + sequence_value - 1).zfill(self.padding)
        return f"{self.prefix}{year}-{number}" if self.with_year else f"{self.prefix}{number}"


DEFAULT_FORMATS = {
    "payment_id": NumberFormat(prefix="PAY-", with_year=True, padding=6, start=4521),
    "transaction_id": NumberFormat(prefix="TXN-", with_year=True, padding=6, start=8934),
    "receipt_number": NumberFormat(prefix="R-", with_year=False, padding=4, start=5001),
}


@dataclass(frozen=True)
class Analysis:
    """Billed (due) against paid for the item a payment went to."""

    due: Decimal
    paid: Decimal

    @property
    def difference(self) -> Decimal:
        return self.paid - self.due

    @property
    def outcome(self) -> Outcome:
        if self.difference == 0:
            return Outcome.EXACT
        return Outcome.OVER if self.difference > 0 else Outcome.UNDER

    @property
    def overpaid(self) -> Decimal:
        return max(self.difference, Decimal(0))


@dataclass(frozen=True)
class Allocation:
    """How much of a payment settles the item, and what is left outstanding on it."""

    applied: Decimal
    outstanding_after: Decimal


def allocate(outstanding: Decimal, amount: Decimal, overpayment_threshold: Decimal) -> Allocation:
    """Apply `amount` to an item owing `outstanding`; more than outstanding + threshold is refused."""
    if amount <= 0:
        raise Rejected("amount_not_positive", "amount must be greater than 0", field="amount")
    if amount > outstanding + overpayment_threshold:
        raise Rejected(
            "amount_exceeds_outstanding",
            f"amount {amount} exceeds the outstanding {outstanding} plus the allowed overpayment "
            f"{overpayment_threshold}",
            field="amount",
        )
    applied = min(amount, outstanding)
    return Allocation(applied=applied, outstanding_after=outstanding - applied)


def change_given(amount: Decimal, cash_received: Decimal | None) -> Decimal | None:
    """Change for a cash payment; the cash handed over must cover the amount."""
    if cash_received is None:
        return None
    if cash_received < amount:
        raise Rejected("cash_received_too_low", "cash received must be at least the amount", field="cash_received")
    return cash_received - amount
