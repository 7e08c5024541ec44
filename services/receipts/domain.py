"""Pure receipt rules: what a receipt or credit note says, given what the events told us. No I/O.

A document is built as data (`Document`: letterhead, title, sections of labelled lines, footer) and only
then laid out, as PDF or as an HTML print view. Both layouts read the same `Document`, so they say the same
thing, and its content hash (printed on it) is a fingerprint of exactly what the reader sees.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from shared.contracts import PaymentStatus
from shared.contracts.events import CreditNoteIssued, PaymentPosted, PaymentType
from shared.errors import Rejected
from shared.money import format_money, percentage
from shared.receivables import parse_installment_reference

RECEIPT = "receipt"
CREDIT_NOTE = "credit_note"

_TYPE_NAMES = {PaymentType.BILL: "Bill", PaymentType.SERVICE: "Service", PaymentType.INSTALLMENT: "Installment"}
_OUTCOMES = {"exact": "Exact payment", "over": "Overpaid", "under": "Underpaid"}


def amount_line(posted: PaymentPosted) -> str:
    """The amount as a receipt prints it: currency symbol and the currency's decimals."""
    return format_money(posted.amount.amount, posted.amount.currency)


# --- how documents look: the utility's letterhead and its local date format ---


@dataclass(frozen=True)
class Letterhead:
    name: str
    address: str
    contact: str


@dataclass(frozen=True)
class DocumentStyle:
    letterhead: Letterhead
    date_format: str = "%b %d, %Y"
    timezone: str = "UTC"

    def day(self, value: date | datetime) -> str:
        """A date (or the local date of an instant) in the utility's configured format."""
        if isinstance(value, datetime):
            value = value.astimezone(ZoneInfo(self.timezone)).date()
        return value.strftime(self.date_format)


# --- what the events told us about a payment after it was posted ---


@dataclass(frozen=True)
class PaymentState:
    """Status, verification and cancellation of a payment: each event moves it forward, never back."""

    status: str
    status_at: datetime
    verification: str
    verified_by: str | None = None
    verified_at: datetime | None = None
    cancelled_at: datetime | None = None
    cancelled_by: str | None = None
    cancel_reason: str | None = None

    @property
    def void(self) -> bool:
        return self.cancelled_at is not None

    def with_status(self, status: str, at: datetime) -> PaymentState:
        """The state after a status reported at `at`; an older report than the one we hold changes nothing.

        A cancellation is final: nothing reported afterwards un-voids a receipt.
        """
        if self.void or at < self.status_at:
            return self
        return replace(self, status=status, status_at=at)

    def verified(self, by: str, at: datetime) -> PaymentState:
        if self.verified_at is not None and self.verified_at <= at:
            return self  # the first verification is the one a receipt shows
        return replace(self, verification="Verified", verified_by=by, verified_at=at)

    def cancelled(self, by: str, reason: str, at: datetime) -> PaymentState:
        if self.cancelled_at is not None and self.cancelled_at <= at:
            return self
        return replace(
            self,
            status=PaymentStatus.CANCELLED,
            status_at=max(at, self.status_at),
            cancelled_at=at,
            cancelled_by=by,
            cancel_reason=reason,
        )

    @property
    def last_change(self) -> datetime:
        return max(t for t in (self.status_at, self.verified_at, self.cancelled_at) if t is not None)


def state_when_posted(posted: PaymentPosted, earlier: PaymentState | None) -> PaymentState:
    """Merge the posting with whatever arrived before it (an online payment's status may be seen first)."""
    merged = PaymentState(status=posted.status, status_at=posted.posted_at, verification=posted.verification)
    if earlier is None:
        return merged
    merged = merged.with_status(earlier.status, earlier.status_at)
    if earlier.verified_at is not None:
        merged = merged.verified(earlier.verified_by or "", earlier.verified_at)
    if earlier.cancelled_at is not None:
        merged = merged.cancelled(earlier.cancelled_by or "", earlier.cancel_reason or "", earlier.cancelled_at)
    return merged


# Before a payment is posted, any status we hear of is older than the posting's own.
NOT_YET_POSTED = datetime(1970, 1, 1, tzinfo=UTC)


def first_sight(status: str = PaymentStatus.PENDING, at: datetime = NOT_YET_POSTED) -> PaymentState:
    """A payment known only from a later event so far: verification pending until it is posted."""
    return PaymentState(status=status, status_at=at, verification="Pending")


# --- the order in which a transaction locks the documents it touches ---

_LOCK_RANK = {RECEIPT: 0, CREDIT_NOTE: 1}


def lock_order(touched: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (kind, number) documents a transaction locks, each once, in the one order every transaction takes them:
    receipts before credit notes (a credit note's handler locks its receipt first), each kind by number. Two
    transactions that take their locks in this order never wait on each other in a circle."""
    return sorted(set(touched), key=lambda document: (_LOCK_RANK[document[0]], document[1]))


# --- what the events told us about a credit note after it was issued ---


@dataclass(frozen=True)
class CreditNoteActivity:
    """An application (or the expiry) of a credit note, as credit_notes reported it."""

    at: datetime
    remaining: Decimal
    status: str
    applied: Decimal | None = None
    # Credit given back (voided, applications reversed) or paid out to the customer by this activity.
    given_back: Decimal = Decimal("0")


# Statuses after which a credit note holds nothing any more, whatever is reported later.
FINAL_NOTE_STATUSES = ("Voided", "Refunded")


def credit_note_standing(amount: Decimal, activity: Sequence[CreditNoteActivity]) -> tuple[Decimal, Decimal, str]:
    """Applied amount, remaining balance and status as of the latest activity (in event time, not arrival)."""
    if not activity:
        return Decimal("0"), amount, "Active"
    latest = max(activity, key=lambda a: (a.at, a.status == "Expired", a.status in FINAL_NOTE_STATUSES))
    given_back = sum((a.given_back for a in activity), Decimal("0"))
    return max(amount - latest.remaining - given_back, Decimal("0")), latest.remaining, latest.status


# --- documents ---


@dataclass(frozen=True)
class Line:
    label: str
    value: str


@dataclass(frozen=True)
class Section:
    title: str
    lines: tuple[Line, ...]


@dataclass(frozen=True)
class Document:
    """Everything a rendered document shows. Same `Document`, same bytes."""

    kind: str
    number: str
    account_number: str
    title: str
    letterhead: Letterhead
    status: str
    void: bool
    sections: tuple[Section, ...]
    stamp: str
    as_of: datetime
    document_hash: str = ""

    def line(self, label: str) -> str:
        """The value printed against `label` (tests and views look fields up by their label)."""
        for section in self.sections:
            for line in section.lines:
                if line.label == label:
                    return line.value
        raise KeyError(label)

    def to_json(self) -> dict[str, Any]:
        # Spelled out rather than `dataclasses.asdict`, which deep-copies every leaf: the same dict (tuples kept as
        # tuples, fields in their order) at a fifth of the cost; it runs twice per document stored (hash, content).
        letterhead = self.letterhead
        return {
            "kind": self.kind,
            "number": self.number,
            "account_number": self.account_number,
            "title": self.title,
            "letterhead": {"name": letterhead.name, "address": letterhead.address, "contact": letterhead.contact},
            "status": self.status,
            "void": self.void,
            "sections": tuple(
                {
                    "title": section.title,
                    "lines": tuple({"label": line.label, "value": line.value} for line in section.lines),
                }
                for section in self.sections
            ),
            "stamp": self.stamp,
            "as_of": self.as_of.astimezone(UTC).isoformat(),
            "document_hash": self.document_hash,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Document:
        return cls(
            kind=data["kind"],
            number=data["number"],
            account_number=data["account_number"],
            title=data["title"],
            letterhead=Letterhead(**data["letterhead"]),
            status=data["status"],
            void=data["void"],
            sections=tuple(
                Section(s["title"], tuple(Line(ln["label"], ln["value"]) for ln in s["lines"]))
                for s in data["sections"]
            ),
            stamp=data["stamp"],
            as_of=datetime.fromisoformat(data["as_of"]),
            document_hash=data["document_hash"],
        )

    def sealed(self) -> Document:
        """The document with its hash: SHA-256 of its canonical JSON without the hash itself."""
        body = {k: v for k, v in self.to_json().items() if k != "document_hash"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return replace(self, document_hash=hashlib.sha256(canonical.encode()).hexdigest())


def _money(amount: Decimal, currency: str) -> str:
    return format_money(amount, currency)


def _month(period: str) -> str:
    """`2025-03` as `Mar 2025`; anything else as it came."""
    try:
        return datetime.strptime(period, "%Y-%m").strftime("%b %Y")
    except ValueError:
        return period


def _iso_day(value: str | None, style: DocumentStyle) -> str:
    if not value:
        return "—"
    try:
        return style.day(date.fromisoformat(value))
    except ValueError:
        return value


def item_lines(posted: PaymentPosted, style: DocumentStyle) -> tuple[Line, ...]:
    """What was paid, in the words of its payment type: invoice and period, service and date, plan and installment."""
    item = posted.item
    kind = Line("Payment type", _TYPE_NAMES[item.payment_type])
    if item.payment_type is PaymentType.BILL:
        return (
            kind,
            Line("Invoice", item.item_reference),
            Line("Billing period", _month(item.period_or_date) if item.period_or_date else "—"),
        )
    if item.payment_type is PaymentType.SERVICE:
        return (
            kind,
            Line("Service", f"{item.description} ({item.item_reference})"),
            Line("Service date", _iso_day(item.period_or_date, style)),
        )
    try:
        installment = parse_installment_reference(item.item_reference)
        plan, number = installment.plan_id, str(installment.number)
    except Rejected:
        # A posted payment always gets its receipt: a reference not written as PLAN/n is shown as it came.
        plan, number = item.item_reference, ""
    return (
        kind,
        Line("Payment plan", plan),
        Line("Installment", f"#{number} due {_iso_day(item.period_or_date, style)}"),
    )


def receipt_document(
    posted: PaymentPosted,
    state: PaymentState,
    credit_notes: Sequence[CreditNoteIssued],
    style: DocumentStyle,
    *,
    void_notes: frozenset[str] = frozenset(),
    version: int = 1,
    superseded_by: int | None = None,
) -> Document:
    """The receipt of a posted payment as it stands now (VOID once cancelled); a credit note made from it that was
    voided says VOID beside it. An adjusted payment's receipt is re-issued under a new version; the old one says
    SUPERSEDED."""
    currency = posted.amount.currency
    notes = sorted(credit_notes, key=lambda n: n.credit_note_number)
    generated = (
        ", ".join(
            f"{n.credit_note_number} ({_money(n.amount.amount, n.amount.currency)})"
            + (" VOID" if n.credit_note_number in void_notes else "")
            for n in notes
        )
        or "None"
    )
    billed = posted.item.amount or posted.item.due
    amounts = [
        Line("Channel", posted.channel),
        Line("Method", posted.method),
        Line("Amount paid", _money(posted.amount.amount, currency)),
        # The item's own amount as billed; what earlier payments had settled of it is "Paid before".
        Line("Billed amount", _money(billed.amount, billed.currency)),
        Line(
            "Paid before", _money(posted.item.paid_before.amount if posted.item.paid_before else Decimal(0), currency)
        ),
        Line("Owed at payment", _money(posted.item.due.amount, posted.item.due.currency)),
        Line(
            "Difference",
            f"{_money(posted.difference.amount, posted.difference.currency)} "
            f"({_OUTCOMES.get(posted.outcome, posted.outcome)})",
        ),
    ]
    if posted.cash_received is not None:
        amounts.append(Line("Cash received", _money(posted.cash_received.amount, posted.cash_received.currency)))
        change = posted.change_given.amount if posted.change_given is not None else Decimal("0")
        amounts.append(Line("Change given", _money(change, currency)))
    amounts.append(Line("Credit note generated", generated))

    processing = [
        Line("Received by", posted.received_by),
        Line("Verification", state.verification),
        Line("Status", state.status),
    ]
    if posted.notes:
        processing.append(Line("Notes", posted.notes))
    payment_lines = [
        Line("Receipt number", posted.receipt_number),
        Line("Payment ID", posted.payment_id),
        Line("Transaction ID", posted.transaction_id),
        Line("Payment date", style.day(posted.payment_date)),
    ]
    if version > 1 or superseded_by is not None:
        payment_lines.append(Line("Version", str(version)))
    if superseded_by is not None:
        payment_lines.append(Line("Superseded by", f"version {superseded_by}"))
    sections = [
        Section("Payment", tuple(payment_lines)),
        Section(
            "Consumer",
            (
                Line("Consumer name", posted.consumer.name),
                Line("Account number", posted.consumer.account_number),
                Line("Service address", posted.consumer.service_address),
            ),
        ),
        Section("Item paid", item_lines(posted, style)),
        Section("Amount", tuple(amounts)),
        Section("Processing", tuple(processing)),
    ]
    if state.void and state.cancelled_at is not None:
        sections.append(
            Section(
                "Cancellation",
                (
                    Line("Cancelled on", style.day(state.cancelled_at)),
                    Line("Cancelled by", state.cancelled_by or "—"),
                    Line("Reason", state.cancel_reason or "—"),
                ),
            )
        )
    as_of = max([state.last_change, posted.posted_at, *(n.created_at for n in notes)])
    return Document(
        kind=RECEIPT,
        number=posted.receipt_number,
        account_number=posted.consumer.account_number,
        title="Payment Receipt",
        letterhead=style.letterhead,
        status="Superseded" if superseded_by is not None else state.status,
        void=state.void,
        sections=tuple(sections),
        stamp=f"Issued electronically by {style.letterhead.name} (Paydesk); no signature required.",
        as_of=as_of,
    ).sealed()


def credit_note_document(
    issued: CreditNoteIssued, activity: Sequence[CreditNoteActivity], style: DocumentStyle
) -> Document:
    """The credit note as it stands now: amount, what was applied, what remains and its status."""
    amount, currency = issued.amount.amount, issued.amount.currency
    applied, remaining, status = credit_note_standing(amount, activity)
    given_back = sum((a.given_back for a in activity), Decimal("0"))
    usage = percentage(applied, amount)
    as_of = max([issued.created_at, *(a.at for a in activity)])
    return Document(
        kind=CREDIT_NOTE,
        number=issued.credit_note_number,
        account_number=issued.account_number,
        title="Credit Note",
        letterhead=style.letterhead,
        status=status,
        void=status == "Voided",
        sections=(
            Section(
                "Credit note",
                (
                    Line("Credit note number", issued.credit_note_number),
                    Line("Status", status),
                    Line("Reason", issued.reason),
                    Line("Linked receipt", issued.receipt_number),
                    Line("Linked payment", issued.payment_id),
                ),
            ),
            Section(
                "Consumer",
                (Line("Consumer name", issued.consumer_name), Line("Account number", issued.account_number)),
            ),
            Section(
                "Amount",
                (
                    Line("Credit amount", _money(amount, currency)),
                    Line("Applied amount", _money(applied, currency)),
                    Line("Remaining balance", _money(remaining, currency)),
                    Line("Voided or refunded", _money(given_back, currency)),
                    Line("Usage", f"{usage}%"),
                ),
            ),
            Section(
                "Dates",
                (
                    Line("Created", style.day(issued.created_at)),
                    Line("Expires", style.day(issued.expires_at)),
                    Line("Created by", issued.created_by),
                ),
            ),
        ),
        stamp=(
            f"System stamp: issued by the Paydesk system for {style.letterhead.name} "
            f"on {style.day(issued.created_at)}; valid without signature."
        ),
        as_of=as_of,
    ).sealed()
