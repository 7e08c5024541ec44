"""The ledger rules that two services apply to the same payment and must agree on: payments allocates a payment
to its item, credit_notes holds the credit made from it. Pure; no I/O.

A collected payment's money is split three ways, always adding up to its amount:

    applied (settles its own item) + credited (became credit, net of credit given back) + refunded = amount

An overpayment's credit note is the part that settled nothing. A credit note issued by staff against a payment
that settled its item turns part of that settlement into credit (the item is owed again): otherwise the same
money would settle the item and be spent again as credit. Money going back (a refund, a cancellation, a lost
dispute) gives back unused credit first, then what the payment settled, and only then credit already applied
to other items (those are owed again).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

ZERO = Decimal("0.00")


def settlement_cap(amount: Decimal, *, refunded: Decimal, credited: Decimal) -> Decimal:
    """The most a payment may settle on its item: what neither went back nor became credit."""
    return max(amount - refunded - credited, ZERO)


def settled_after_credit(applied: Decimal, amount: Decimal, *, refunded: Decimal, credited: Decimal) -> Decimal:
    """What a payment still settles on its item once `credited` of it is credit (credit comes out of the part
    that settled nothing first)."""
    return min(applied, settlement_cap(amount, refunded=refunded, credited=credited))


@dataclass(frozen=True)
class RefundSplit:
    """Where a refund's money comes from: the payment's own settlement, and its credit (unused, then applied)."""

    settled_reduction: Decimal
    credit_to_void: Decimal


def refund_split(refund: Decimal, *, applied: Decimal, unused_credit: Decimal) -> RefundSplit:
    """Unused credit first, then what the payment settled; whatever is left comes out of credit already applied."""
    if refund < 0:
        raise ValueError("a refund is not negative")
    from_unused = min(max(unused_credit, ZERO), refund)
    settled = min(applied, refund - from_unused)
    return RefundSplit(settled_reduction=settled, credit_to_void=refund - settled)
