"""Pure receipt rules. No I/O."""

from __future__ import annotations

from shared.contracts.events import PaymentPosted
from shared.money import format_money


def amount_line(posted: PaymentPosted) -> str:
    """The amount as a receipt prints it: currency symbol and the currency's decimals."""
    return format_money(posted.amount.amount, posted.amount.currency)
