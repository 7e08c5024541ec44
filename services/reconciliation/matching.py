"""The matching engine: bank lines against what should reach the bank, by rules in priority order. Pure: no I/O.

Every rule looks candidates up in indexes (by amount in minor units and date, by reference token, by group), so a
run is near-linear in the number of lines and items; nothing ever compares all lines with all items.

Outcomes: every bank line ends exactly once `matched` (to items, or recognised as a bank fee), `expected` (too
recent to call missing its other side) or `excepted`; every item ends `matched`, `expected` (inside its T+N
window) or `missing` (past it).
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Literal

ZERO = Decimal(0)
CENT = Decimal("0.01")
BANK_FEE_RULE = "bank_fee"
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-/.]*[A-Za-z0-9]|[A-Za-z0-9]")

RuleKind = Literal["one_to_one", "one_to_many", "many_to_one"]


class LineOutcome(StrEnum):
    MATCHED = "matched"
    EXPECTED = "expected"
    EXCEPTED = "excepted"


class ItemOutcome(StrEnum):
    MATCHED = "matched"
    EXPECTED = "expected"
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class BankLine:
    """One line of a bank statement; `amount` is signed (credits positive)."""

    line_id: str
    amount: Decimal
    currency: str
    booking_date: date
    reference: str = ""
    text: str = ""
    type_code: str = ""


@dataclass(frozen=True, slots=True)
class ExpectedItem:
    """Money that should reach the bank: `amount` is what the bank will show (net of gateway fees).

    It may arrive from `origin_date` to `origin_date + window_days` (T+N of its channel). Items with the same
    `group` reach the bank as one line (a day's cash deposit, a payout's balance transactions).
    """

    item_id: str
    amount: Decimal
    currency: str
    origin_date: date
    window_days: int = 0
    reference: str = ""
    group: str | None = None
    gateway_fee: Decimal = ZERO

    @property
    def due_by(self) -> date:
        return self.origin_date + timedelta(days=self.window_days)


@dataclass(frozen=True, slots=True)
class Rule:
    """One matching rule; `kind` says how many lines meet how many items."""

    name: str
    kind: RuleKind
    amount_tolerance: Decimal = ZERO
    date_tolerance_days: int = 0
    require_reference: bool = False


@dataclass(frozen=True, slots=True)
class FeePolicy:
    """How a bank's own charges are recognised: by transaction code or a word in the line's text (debits only)."""

    codes: frozenset[str] = frozenset()
    keywords: tuple[str, ...] = ()

    def is_fee(self, line: BankLine) -> bool:
        if line.amount >= 0:
            return False
        if line.type_code and line.type_code.upper() in self.codes:
            return True
        words = f"{line.reference} {line.text}".upper()
        return any(k.upper() in words for k in self.keywords)


@dataclass(frozen=True, slots=True)
class Match:
    """Lines and items matched together, with the rule, a score out of 100 and what differs."""

    rule: str
    score: Decimal
    line_ids: tuple[str, ...]
    item_ids: tuple[str, ...]
    line_total: Decimal
    item_total: Decimal
    differences: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Result:
    matches: list[Match]
    lines: dict[str, LineOutcome]
    items: dict[str, ItemOutcome]


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("reference_exact", "one_to_one", ZERO, 3, require_reference=True),
    Rule("group_by_reference", "one_to_many", ZERO, 3, require_reference=True),
    Rule("lines_by_reference", "many_to_one", ZERO, 3, require_reference=True),
    Rule("group_by_amount_date", "one_to_many", ZERO, 1),
    Rule("amount_date", "one_to_one", ZERO, 1),
)


def cents(amount: Decimal) -> int:
    """An amount in minor units (2 decimals), the key of the amount indexes."""
    return int((amount / CENT).to_integral_value())


def tokens(*texts: str) -> list[str]:
    """The reference-like words of a line's texts, upper-cased, in order, without repeats."""
    seen: dict[str, None] = {}
    for text in texts:
        for token in _TOKEN.findall(text):
            seen.setdefault(token.upper(), None)
    return list(seen)


def days_off(line_date: date, origin: date, due_by: date) -> int:
    """How many days a line falls outside an item's window (0 inside it)."""
    if line_date < origin:
        return (origin - line_date).days
    if line_date > due_by:
        return (line_date - due_by).days
    return 0


def score(amount_difference: Decimal, item_total: Decimal, days: int) -> Decimal:
    """100 for an exact match inside the window; less per day outside it and per share of amount differing."""
    share = abs(amount_difference) / max(abs(item_total), CENT)
    value = Decimal(100) - Decimal(10) * days - share * 100
    return max(value, ZERO).quantize(CENT)


@dataclass(slots=True)
class _Target:
    """What a line can match: one item, or a group of items reaching the bank as one line."""

    key: str
    items: list[ExpectedItem]
    amount: Decimal
    currency: str
    origin: date
    due_by: date
    references: tuple[str, ...]
    taken: bool = False


def _targets_of_items(items: Iterable[ExpectedItem]) -> list[_Target]:
    return [
        _Target(
            key=i.item_id,
            items=[i],
            amount=i.amount,
            currency=i.currency,
            origin=i.origin_date,
            due_by=i.due_by,
            references=(i.reference.upper(),) if i.reference else (),
        )
        for i in items
    ]


def _targets_of_groups(items: Iterable[ExpectedItem]) -> list[_Target]:
    groups: dict[str, list[ExpectedItem]] = defaultdict(list)
    for item in items:
        if item.group is not None:
            groups[item.group].append(item)
    targets = []
    for group, members in groups.items():
        if len({m.currency for m in members}) != 1:
            continue
        targets.append(
            _Target(
                key=group,
                items=members,
                amount=sum((m.amount for m in members), ZERO),
                currency=members[0].currency,
                origin=max(m.origin_date for m in members),
                due_by=max(m.due_by for m in members),
                references=(group.upper(),),
            )
        )
    return targets


class _Engine:
    def __init__(self, lines: Sequence[BankLine], items: Sequence[ExpectedItem]) -> None:
        self.lines = {line.line_id: line for line in lines}
        self.items = {item.item_id: item for item in items}
        if len(self.lines) != len(lines) or len(self.items) != len(items):
            raise ValueError("line and item ids must be unique")
        self.open_lines: dict[str, BankLine] = dict(self.lines)
        self.matched_items: set[str] = set()
        self.matches: list[Match] = []
        self.line_tokens = {line.line_id: tokens(line.reference, line.text) for line in lines}

    # --- bookkeeping ---

    def _available(self, target: _Target) -> bool:
        return not target.taken and not any(i.item_id in self.matched_items for i in target.items)

    def _record(self, rule: Rule, lines: list[BankLine], target: _Target) -> None:
        line_total = sum((line.amount for line in lines), ZERO)
        difference = line_total - target.amount
        days = max(days_off(line.booking_date, target.origin, target.due_by) for line in lines)
        differences = {"amount": format(difference, "f"), "days": str(days)}
        fees = sum((i.gateway_fee for i in target.items), ZERO)
        if fees:
            differences["gateway_fees"] = format(fees, "f")
            differences["gross"] = format(target.amount + fees, "f")
        self.matches.append(
            Match(
                rule=rule.name,
                score=score(difference, target.amount, days),
                line_ids=tuple(line.line_id for line in lines),
                item_ids=tuple(i.item_id for i in target.items),
                line_total=line_total,
                item_total=target.amount,
                differences=differences,
            )
        )
        target.taken = True
        for line in lines:
            del self.open_lines[line.line_id]
        self.matched_items.update(i.item_id for i in target.items)

    def _fits(self, rule: Rule, line_date: date, amount: Decimal, target: _Target) -> bool:
        return (
            abs(amount - target.amount) <= rule.amount_tolerance
            and days_off(line_date, target.origin, target.due_by) <= rule.date_tolerance_days
        )

    # --- rules ---

    def fees(self, policy: FeePolicy) -> None:
        for line in list(self.open_lines.values()):
            if policy.is_fee(line):
                self.matches.append(
                    Match(
                        rule=BANK_FEE_RULE,
                        score=Decimal(100),
                        line_ids=(line.line_id,),
                        item_ids=(),
                        line_total=line.amount,
                        item_total=ZERO,
                        differences={"bank_fee": format(-line.amount, "f")},
                    )
                )
                del self.open_lines[line.line_id]

    def _targets(self, rule: Rule) -> list[_Target]:
        open_items = [i for i in self.items.values() if i.item_id not in self.matched_items]
        if rule.kind == "one_to_one":
            return _targets_of_items(open_items)
        if rule.kind == "one_to_many":
            return _targets_of_groups(open_items)
        return _targets_of_items(open_items) + _targets_of_groups(open_items)

    def by_reference(self, rule: Rule) -> None:
        index: dict[tuple[str, str], list[_Target]] = defaultdict(list)
        for target in self._targets(rule):
            for reference in target.references:
                index[(target.currency, reference)].append(target)
        if rule.kind == "many_to_one":
            self._many_by_reference(rule, index)
            return
        for line in sorted(self.open_lines.values(), key=lambda x: x.line_id):
            for token in self.line_tokens[line.line_id]:
                chosen = next(
                    (
                        t
                        for t in index.get((line.currency, token), ())
                        if self._available(t) and self._fits(rule, line.booking_date, line.amount, t)
                    ),
                    None,
                )
                if chosen is not None:
                    self._record(rule, [line], chosen)
                    break

    def _many_by_reference(self, rule: Rule, index: dict[tuple[str, str], list[_Target]]) -> None:
        # Each open line joins the first of its tokens that names a target; the lines of a token together
        # must add up to that target.
        by_token: dict[tuple[str, str], list[BankLine]] = defaultdict(list)
        for line in sorted(self.open_lines.values(), key=lambda x: x.line_id):
            for token in self.line_tokens[line.line_id]:
                if (line.currency, token) in index:
                    by_token[(line.currency, token)].append(line)
                    break
        for key, lines in by_token.items():
            if len(lines) < 2:
                continue
            total = sum((line.amount for line in lines), ZERO)
            latest = max(line.booking_date for line in lines)
            for target in index[key]:
                if self._available(target) and self._fits(rule, latest, total, target):
                    self._record(rule, lines, target)
                    break

    def by_amount_and_date(self, rule: Rule) -> None:
        # Targets by (currency, amount in minor units, origin date); a line looks at the few amounts its
        # tolerance allows and the few origin dates whose window (plus tolerance) can hold its date.
        index: dict[tuple[str, int, date], deque[_Target]] = defaultdict(deque)
        longest = 0
        targets = sorted(self._targets(rule), key=lambda t: (t.origin, t.key))
        for target in targets:
            index[(target.currency, cents(target.amount), target.origin)].append(target)
            longest = max(longest, (target.due_by - target.origin).days)
        spread = cents(rule.amount_tolerance)
        reach = longest + rule.date_tolerance_days
        for line in sorted(self.open_lines.values(), key=lambda x: (x.booking_date, x.line_id)):
            best: _Target | None = None
            best_rank: tuple[int, int, int] | None = None
            base = cents(line.amount)
            for amount in range(base - spread, base + spread + 1):
                for back in range(-rule.date_tolerance_days, reach + 1):
                    bucket = index.get((line.currency, amount, line.booking_date - timedelta(days=back)))
                    if not bucket:
                        continue
                    while bucket and not self._available(bucket[0]):
                        bucket.popleft()
                    if not bucket:
                        continue
                    candidate = bucket[0]
                    if not self._fits(rule, line.booking_date, line.amount, candidate):
                        continue
                    rank = (
                        days_off(line.booking_date, candidate.origin, candidate.due_by),
                        abs(amount - base),
                        abs(back),
                    )
                    if best_rank is None or rank < best_rank:
                        best, best_rank = candidate, rank
            if best is not None:
                self._record(rule, [line], best)


def reconcile(
    lines: Sequence[BankLine],
    items: Sequence[ExpectedItem],
    *,
    rules: Sequence[Rule] = DEFAULT_RULES,
    fees: FeePolicy | None = None,
    today: date,
    line_grace_days: int = 0,
) -> Result:
    """Match `lines` to `items` by `rules` in order; every line and item gets exactly one outcome."""
    engine = _Engine(lines, items)
    if fees is not None:
        engine.fees(fees)
    for rule in rules:
        if not engine.open_lines:
            break
        if rule.require_reference:
            engine.by_reference(rule)
        elif rule.kind != "many_to_one":
            engine.by_amount_and_date(rule)
    line_outcomes: dict[str, LineOutcome] = {}
    for line_id, line in engine.lines.items():
        if line_id not in engine.open_lines:
            line_outcomes[line_id] = LineOutcome.MATCHED
        elif (today - line.booking_date).days <= line_grace_days:
            line_outcomes[line_id] = LineOutcome.EXPECTED
        else:
            line_outcomes[line_id] = LineOutcome.EXCEPTED
    item_outcomes: dict[str, ItemOutcome] = {}
    for item_id, item in engine.items.items():
        if item_id in engine.matched_items:
            item_outcomes[item_id] = ItemOutcome.MATCHED
        elif today <= item.due_by:
            item_outcomes[item_id] = ItemOutcome.EXPECTED
        else:
            item_outcomes[item_id] = ItemOutcome.MISSING
    return Result(matches=engine.matches, lines=line_outcomes, items=item_outcomes)
