"""Reconciliation's pure rules: statements and their validation, expected windows, till close, exception ageing.

No I/O here; the matching engine is in `matching.py`.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from shared.errors import Rejected

ZERO = Decimal(0)
_CURRENCY = re.compile(r"[A-Z]{3}")


class LineStatus(StrEnum):
    """Where a bank line stands; the engine's outcomes plus what people decide."""

    UNMATCHED = "unmatched"  # not reconciled yet
    EXPECTED = "expected"  # too recent to call its other side missing
    MATCHED = "matched"
    EXCEPTED = "excepted"  # in the exception queue
    IGNORED = "ignored"  # a person decided it needs no match (kept, with the reason)


class ItemStatus(StrEnum):
    EXPECTED = "expected"
    MATCHED = "matched"
    MISSING = "missing"
    IGNORED = "ignored"


class ExceptionKind(StrEnum):
    UNMATCHED_BANK_LINE = "unmatched_bank_line"
    MISSING_DEPOSIT = "missing_deposit"
    AMOUNT_DIFFERENCE = "amount_difference"
    TILL_VARIANCE = "till_variance"


class Resolution(StrEnum):
    MANUAL_MATCH = "manual_match"
    SPLIT = "split"
    MARK_AS_FEE = "mark_as_fee"
    IGNORE = "ignore"
    ADJUSTMENT_REQUESTED = "adjustment_requested"


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One line as a bank file states it; `source_line` is where it is in the file (for error reports)."""

    source_line: int
    booking_date: date | None
    amount: Decimal | None
    currency: str | None
    reference: str = ""
    bank_reference: str = ""
    text: str = ""
    type_code: str = ""
    value_date: date | None = None
    counterparty: str = ""


@dataclass(frozen=True, slots=True)
class Statement:
    """One account's statement over a period, as parsed from a file (several may come in one file)."""

    statement_ref: str
    account: str
    currency: str | None
    opening_balance: Decimal | None
    closing_balance: Decimal | None
    from_date: date | None
    to_date: date | None
    lines: tuple[StatementLine, ...]
    opening_source_line: int = 0
    closing_source_line: int = 0
    # Statements of an account follow each other (one opens where the last closed); notifications do not.
    chained: bool = True


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong in an uploaded file: where (the file's line), which field, and why."""

    line: int
    field: str
    detail: str
    statement: str = ""

    def as_json(self) -> dict[str, object]:
        return {"line": self.line, "field": self.field, "detail": self.detail, "statement": self.statement}


class StatementInvalid(Rejected):
    """A file that cannot be imported as sent; `problems` names each line and field. Nothing was imported."""

    def __init__(self, problems: list[Problem]) -> None:
        first = problems[0]
        super().__init__(
            "statement_invalid",
            f"line {first.line}, {first.field}: {first.detail}"
            + (f" (+{len(problems) - 1} more)" if problems[1:] else ""),
            field=first.field,
        )
        self.problems = problems


def _text(amount: Decimal) -> str:
    return format(amount, "f")


def validate_statement(statement: Statement, *, today: date) -> list[Problem]:
    """Currency, dates and balances: opening + lines must equal closing, every line in the statement's currency
    and inside its period (never in the future)."""
    problems: list[Problem] = []
    ref = statement.statement_ref

    def problem(line: int, field: str, detail: str) -> None:
        problems.append(Problem(line, field, detail, ref))

    if not statement.currency or not _CURRENCY.fullmatch(statement.currency):
        problem(statement.opening_source_line, "currency", f"not an ISO 4217 currency: {statement.currency!r}")
    if statement.opening_balance is None:
        problem(statement.opening_source_line, "opening_balance", "the statement has no opening balance")
    if statement.closing_balance is None:
        problem(statement.closing_source_line, "closing_balance", "the statement has no closing balance")
    if statement.from_date and statement.to_date and statement.from_date > statement.to_date:
        problem(statement.opening_source_line, "from_date", "the period ends before it starts")
    total = ZERO
    for line in statement.lines:
        if line.amount is None:
            problem(line.source_line, "amount", "missing or not a decimal amount")
        else:
            if line.amount.as_tuple().exponent < -2:  # type: ignore[operator]
                problem(line.source_line, "amount", f"more than 2 decimals: {_text(line.amount)}")
            total += line.amount
        if line.currency and statement.currency and line.currency != statement.currency:
            problem(line.source_line, "currency", f"{line.currency} in a {statement.currency} statement")
        if line.booking_date is None:
            problem(line.source_line, "booking_date", "missing or not a date")
        elif line.booking_date > today:
            problem(line.source_line, "booking_date", f"{line.booking_date} is in the future")
        elif (
            statement.from_date
            and statement.to_date
            and not (statement.from_date <= line.booking_date <= statement.to_date)
        ):
            problem(
                line.source_line,
                "booking_date",
                f"{line.booking_date} is outside the statement period {statement.from_date}..{statement.to_date}",
            )
    if problems or statement.opening_balance is None or statement.closing_balance is None:
        return problems
    if statement.opening_balance + total != statement.closing_balance:
        problem(
            statement.closing_source_line,
            "closing_balance",
            f"opening {_text(statement.opening_balance)} + lines {_text(total)} = "
            f"{_text(statement.opening_balance + total)}, but the closing balance is "
            f"{_text(statement.closing_balance)} "
            f"(difference {_text(statement.closing_balance - statement.opening_balance - total)})",
        )
    return problems


def validate_chain(statements: list[Statement]) -> list[Problem]:
    """Consecutive statements of one account in one file: each opens where the previous one closed."""
    problems = []
    by_account: dict[str, list[Statement]] = {}
    for statement in (s for s in statements if s.chained):
        by_account.setdefault(statement.account, []).append(statement)
    for chain in by_account.values():
        for before, after in itertools.pairwise(chain):
            if (
                before.closing_balance is not None
                and after.opening_balance is not None
                and before.closing_balance != after.opening_balance
            ):
                problems.append(
                    Problem(
                        after.opening_source_line,
                        "opening_balance",
                        f"opens at {_text(after.opening_balance)} but {before.statement_ref} closed at "
                        f"{_text(before.closing_balance)}",
                        after.statement_ref,
                    )
                )
    return problems


def validate_file(statements: list[Statement], *, today: date) -> None:
    """Refuse the whole file (`StatementInvalid`) if any statement in it is wrong."""
    if not statements:
        raise StatementInvalid([Problem(1, "file", "no statement found in the file")])
    problems = [p for s in statements for p in validate_statement(s, today=today)] + validate_chain(statements)
    refs = [s.statement_ref for s in statements]
    for ref in {r for r in refs if refs.count(r) > 1}:
        problems.append(Problem(1, "statement_id", f"statement {ref} appears twice in the file", ref))
    if problems:
        raise StatementInvalid(problems)


# --- expected side ---


def deposit_group(branch: str, day: date, method: str) -> str:
    """The group key of a day's counter takings of one kind at one branch: one bank deposit is expected."""
    return f"DEP/{branch}/{day.isoformat()}/{method}"


def is_counter_cash(method: str, counter_methods: tuple[str, ...]) -> bool:
    return method.casefold() in {m.casefold() for m in counter_methods}


# --- till close ---


@dataclass(frozen=True, slots=True)
class TillCount:
    expected_cash: Decimal
    expected_cheques: Decimal
    counted_cash: Decimal
    counted_cheques: Decimal

    @property
    def variance(self) -> Decimal:
        """Counted minus expected: negative is a shortage, positive an overage."""
        return (self.counted_cash + self.counted_cheques) - (self.expected_cash + self.expected_cheques)

    def needs_exception(self, threshold: Decimal) -> bool:
        return abs(self.variance) > threshold


def expected_cash_of(amount: Decimal, cash_received: Decimal | None, change_given: Decimal | None) -> Decimal:
    """What a cash payment left in the till: received minus change (the amount, if the counter did not say)."""
    if cash_received is None:
        return amount
    return cash_received - (change_given or ZERO)


# --- exceptions ---

AGE_BUCKETS: tuple[tuple[str, int], ...] = (("0-1d", 1), ("2-7d", 7), ("8-30d", 30))


def age_bucket(raised_at: datetime, now: datetime) -> str:
    """The age column of the exception queue and the daily summary."""
    days = (now - raised_at).days
    for name, limit in AGE_BUCKETS:
        if days <= limit:
            return name
    return ">30d"


@dataclass(frozen=True, slots=True)
class Split:
    """One part of a bank line split by hand: an amount and what it is for (an item to match, or a fee)."""

    amount: Decimal
    item_ids: tuple[str, ...] = ()
    fee: bool = False
    note: str = ""


def check_split(line_amount: Decimal, parts: list[Split]) -> None:
    """A split's parts add up to the line exactly, each part non-zero and with the line's sign."""
    if len(parts) < 2:
        raise Rejected("split_needs_parts", "a split has at least two parts", field="parts")
    if any(p.amount == 0 or (p.amount > 0) != (line_amount > 0) for p in parts):
        raise Rejected("split_part_sign", "every part is non-zero and has the line's sign", field="parts")
    total = sum((p.amount for p in parts), ZERO)
    if total != line_amount:
        raise Rejected(
            "split_does_not_add_up",
            f"the parts add up to {_text(total)}, the line is {_text(line_amount)}",
            field="parts",
        )


@dataclass(frozen=True, slots=True)
class Summary:
    """The daily summary: matched share, exceptions by age, amount still unreconciled."""

    lines: int
    matched: int
    unreconciled_amount: Decimal
    exceptions_by_age: dict[str, int] = field(default_factory=dict)

    @property
    def matched_percent(self) -> Decimal:
        if not self.lines:
            return Decimal(100)
        return (Decimal(self.matched) * 100 / Decimal(self.lines)).quantize(Decimal("0.1"))


def window_end(origin: date, days: int) -> date:
    return origin + timedelta(days=days)


def past_window(origin: date, window_days: int, today: date) -> bool:
    """An expected item is missing once `today` is after its last day at the bank (T+N); on that day it is not."""
    return today > window_end(origin, window_days)
