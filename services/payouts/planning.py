"""The plan of a payout run: which payees it pays and how much, each line converted with provenance. Pure."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from services.payouts.conversion import Conversion, Rate, convert
from services.payouts.domain import ZERO, LineKind, PayeeStatus, PayoutMethod
from shared.errors import Rejected


@dataclass(frozen=True)
class OpenLine:
    line_id: str
    payee_id: str
    amount: Decimal
    currency: str
    earned_on: date
    kind: str = LineKind.COMMISSION


@dataclass(frozen=True)
class RunPayee:
    payee_id: str
    name: str
    payout_currency: str
    method: PayoutMethod | None
    status: PayeeStatus = PayeeStatus.ACTIVE


@dataclass(frozen=True)
class PlannedItem:
    line: OpenLine
    conversion: Conversion


@dataclass(frozen=True)
class PlannedPayout:
    payee_id: str
    currency: str
    method: PayoutMethod
    items: tuple[PlannedItem, ...]

    @property
    def amount(self) -> Decimal:
        return sum((i.conversion.converted for i in self.items), ZERO)


@dataclass(frozen=True)
class Held:
    """A payee left out of this run, with why; its lines stay open for the next run."""

    payee_id: str
    code: str
    detail: str
    line_ids: tuple[str, ...]
    field: str | None = None


@dataclass(frozen=True)
class RunPlan:
    payouts: tuple[PlannedPayout, ...]
    held: tuple[Held, ...] = field(default_factory=tuple)

    def totals(self) -> dict[str, Decimal]:
        """Per payout currency, the sum of the run's payouts."""
        sums: dict[str, Decimal] = defaultdict(lambda: ZERO)
        for payout in self.payouts:
            sums[payout.currency] += payout.amount
        return dict(sorted(sums.items()))


def plan_run(
    lines: Iterable[OpenLine],
    payees: dict[str, RunPayee],
    rates: Sequence[Rate],
    *,
    as_of: date,
    minimum_amount: Decimal | None = None,
    max_rate_age: timedelta = timedelta(days=7),
) -> RunPlan:
    """Which payees a run pays and how much, each line converted to the payee's currency with provenance.

    A payee is held, whole, when it has no payout method or is not active, when any of its lines lacks an
    exchange rate (paying the rest without it could overpay a reversal), when its total is zero or negative
    (nothing negative is ever sent; reversals carry to the next run), or below the run's minimum.
    """
    by_payee: dict[str, list[OpenLine]] = defaultdict(list)
    for line in lines:
        by_payee[line.payee_id].append(line)
    payouts: list[PlannedPayout] = []
    held: list[Held] = []
    for payee_id in sorted(by_payee):
        own = sorted(by_payee[payee_id], key=lambda ln: (ln.earned_on, ln.line_id))
        ids = tuple(ln.line_id for ln in own)
        payee = payees[payee_id]
        if payee.method is None:
            held.append(Held(payee_id, "payee_without_method", "the payee has no payout method", ids, "method"))
            continue
        if payee.status is not PayeeStatus.ACTIVE:
            held.append(Held(payee_id, "payee_not_active", f"the payee is {payee.status.value}", ids, "status"))
            continue
        items: list[PlannedItem] = []
        missing: Rejected | None = None
        for line in own:
            try:
                conversion = convert(
                    line.amount, line.currency, payee.payout_currency, rates, on=as_of, max_age=max_rate_age
                )
            except Rejected as exc:
                missing = exc
                break
            items.append(PlannedItem(line, conversion))
        if missing is not None:
            held.append(Held(payee_id, missing.code, missing.detail, ids, missing.field))
            continue
        payout = PlannedPayout(payee_id, payee.payout_currency, payee.method, tuple(items))
        if payout.amount <= 0:
            held.append(
                Held(payee_id, "not_positive", f"the lines net to {payout.amount} {payout.currency}; carried", ids)
            )
        elif minimum_amount is not None and payout.amount < minimum_amount:
            held.append(
                Held(payee_id, "below_minimum", f"{payout.amount} {payout.currency} is below {minimum_amount}", ids)
            )
        else:
            payouts.append(payout)
    return RunPlan(tuple(payouts), tuple(held))
