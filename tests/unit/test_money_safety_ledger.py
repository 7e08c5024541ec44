"""One account's money across the services' pure rules, under any sequence of what can happen to it.

The state machine plays payments' rules (`services.payments.domain`: allocation, adjustments, disputes), credit
notes' rules (`services.credit_notes.domain`: issuing, applying, voiding, expiring, refunding credit) and the ledger
rules both apply to the same payment (`shared.ledger`), the way the services chain them through their events.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from services.credit_notes import domain as credit
from services.payments import domain as pay
from shared import ledger
from shared.contracts import PaymentStatus, counts_as_collected
from shared.errors import Rejected

NOW = datetime(2025, 4, 20, tzinfo=UTC)
YEAR = timedelta(days=365)
ZERO = Decimal("0.00")
ITEMS = {"INV-1": Decimal("145.50"), "INV-2": Decimal("152.25"), "SC-1": Decimal("25.00"), "SC-2": Decimal("75.00")}
THRESHOLD = Decimal("100.00")
GONE_BACK = {PaymentStatus.CANCELLED, PaymentStatus.REFUNDED, PaymentStatus.CHARGED_BACK}

cents = st.integers(min_value=1, max_value=30_000).map(lambda c: Decimal(c).scaleb(-2))


@dataclass
class Payment:
    amount: Decimal
    item: str
    applied: Decimal
    status: PaymentStatus = PaymentStatus.POSTED
    credited: Decimal = ZERO  # credit made from it, net of what was given back (refunded-out credit stays)
    refunded: Decimal = ZERO  # gateway refunds


@dataclass
class Note:
    payment: int
    note: credit.CreditNote


@dataclass
class Application:
    note: str
    item: str
    application: credit.Application


@dataclass
class Account:
    payments: list[Payment] = field(default_factory=list)
    notes: dict[str, Note] = field(default_factory=dict)
    applications: list[Application] = field(default_factory=list)


class MoneyOfOneAccount(RuleBasedStateMachine):
    """INVARIANT: for every account, sum(allocations) + sum(active credit) (+ credit forfeited by expiry) =
    sum(money received) - sum(money returned); no credit is ever applied twice; no item is ever owed a negative
    amount; and every payment's money adds up: applied + credited + refunded = amount while it is collected."""

    def __init__(self) -> None:
        super().__init__()
        self.account = Account()
        self.sequence = 0

    # --- helpers: the services' reads ---

    def allocated(self, item: str) -> Decimal:
        own = sum((p.applied for p in self.account.payments if p.item == item and counts_as_collected(p.status)), ZERO)
        credit_used = sum((a.application.standing for a in self.account.applications if a.item == item), ZERO)
        return own + credit_used

    def outstanding(self, item: str) -> Decimal:
        return ITEMS[item] - self.allocated(item)

    def notes_of(self, index: int) -> list[tuple[str, credit.CreditNote]]:
        return [(n, note.note) for n, note in self.account.notes.items() if note.payment == index]

    def issue_note(self, index: int, amount: Decimal) -> str:
        """credit_notes issues it; payments (and credit_notes' mirror) apply the ledger rule to the payment."""
        payment = self.account.payments[index]
        credit_refunded = sum((n.refunded for _, n in self.notes_of(index)), ZERO)
        credit.PaymentCredit(
            amount=payment.amount,
            credited=payment.credited - credit_refunded,
            payment_status=payment.status,
            refunded=payment.refunded + credit_refunded,
        ).issue(amount)
        self.sequence += 1
        number = f"CN-{self.sequence}"
        self.account.notes[number] = Note(index, credit.CreditNote(amount=amount, expires_at=NOW + YEAR))
        payment.credited += amount
        payment.applied = ledger.settled_after_credit(
            payment.applied, payment.amount, refunded=payment.refunded, credited=payment.credited
        )
        return number

    def give_back(self, index: int, most: Decimal | None) -> Decimal:
        """credit_notes' void: unused credit first, then applications (their items are owed again)."""
        numbers = {n for n, _ in self.notes_of(index)}
        applications = [a.application for a in self.account.applications if a.note in numbers]
        total = ZERO
        for void in credit.void_plan(self.notes_of(index), applications, most):
            self.account.notes[void.credit_note_number].note = void.after
            total += void.voided
            for application_id, amount in void.reversed:
                for a in self.account.applications:
                    if a.application.application_id == application_id:
                        a.application = replace(a.application, reversed=a.application.reversed + amount)
                total += amount
        self.account.payments[index].credited -= total
        return total

    def money_goes_back(self, index: int, status: PaymentStatus) -> None:
        payment = self.account.payments[index]
        payment.status = status
        self.give_back(index, None)

    # --- what can happen ---

    @rule(item=st.sampled_from(sorted(ITEMS)), amount=cents)
    def pay_an_item(self, item: str, amount: Decimal) -> None:
        """Pay (exactly, under or over): the overpaid part becomes an automatic credit note."""
        try:
            allocation = pay.allocate(self.outstanding(item), amount, THRESHOLD)
        except Rejected:
            return
        self.account.payments.append(Payment(amount=amount, item=item, applied=allocation.applied))
        overpaid = pay.Analysis(due=self.outstanding(item) + allocation.applied, paid=amount).overpaid
        if overpaid > 0:
            self.issue_note(len(self.account.payments) - 1, overpaid)

    @precondition(lambda self: self.account.payments)
    @rule(data=st.data(), amount=cents)
    def issue_credit(self, data: st.DataObject, amount: Decimal) -> None:
        """Staff turn part of a payment into credit (up to what is left of it)."""
        index = data.draw(st.integers(0, len(self.account.payments) - 1))
        with contextlib.suppress(Rejected):
            self.issue_note(index, amount)

    @precondition(lambda self: self.account.notes)
    @rule(data=st.data(), item=st.sampled_from(sorted(ITEMS)), amount=st.none() | cents)
    def apply(self, data: st.DataObject, item: str, amount: Decimal | None) -> None:
        number = data.draw(st.sampled_from(sorted(self.account.notes)))
        note = self.account.notes[number]
        try:
            after, used = note.note.apply(amount, item_outstanding=self.outstanding(item), now=NOW)
        except Rejected:
            return
        note.note = after
        self.sequence += 1
        application = credit.Application(f"A-{self.sequence}", number, used, NOW + timedelta(seconds=self.sequence))
        self.account.applications.append(Application(number, item, application))

    @precondition(lambda self: self.account.payments)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.account.payments) - 1))
        try:
            pay.check_cancellable(self.account.payments[index].status, "entered twice")
        except Rejected:
            return
        self.money_goes_back(index, PaymentStatus.CANCELLED)

    @precondition(lambda self: self.account.payments)
    @rule(data=st.data())
    def refund_in_full(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.account.payments) - 1))
        payment = self.account.payments[index]
        if not pay.moves_forward(payment.status, PaymentStatus.REFUNDED) or not counts_as_collected(payment.status):
            return
        payment.refunded = payment.amount
        self.money_goes_back(index, PaymentStatus.REFUNDED)

    @precondition(lambda self: self.account.payments)
    @rule(data=st.data(), share=st.integers(1, 99))
    def refund_partly(self, data: st.DataObject, share: int) -> None:
        """Part of a payment goes back: unused credit first, then what it settled, then credit already applied."""
        index = data.draw(st.integers(0, len(self.account.payments) - 1))
        payment = self.account.payments[index]
        if not counts_as_collected(payment.status):
            return
        paid_out = sum((n.refunded for _, n in self.notes_of(index)), ZERO)
        still_here = payment.applied + payment.credited - paid_out  # credit already paid out cannot go back twice
        refund = (still_here * share / 100).quantize(Decimal("0.01"))
        if refund <= 0:
            return
        unused = sum((n.available for _, n in self.notes_of(index)), ZERO)
        split = ledger.refund_split(refund, applied=payment.applied, unused_credit=unused)
        payment.applied -= split.settled_reduction
        payment.refunded += refund
        assert self.give_back(index, split.credit_to_void) == split.credit_to_void, "the credit covers the rest"

    @precondition(lambda self: self.account.payments)
    @rule(data=st.data(), item=st.sampled_from(sorted(ITEMS)))
    def move(self, data: st.DataObject, item: str) -> None:
        """A payment recorded against the wrong item is moved to another of the account's items."""
        index = data.draw(st.integers(0, len(self.account.payments) - 1))
        payment = self.account.payments[index]
        try:
            plan = pay.plan_adjustment(
                pay.AdjustmentKind.MOVE,
                payment.status,
                pay.PaymentLedger(payment.amount, payment.applied, payment.credited, payment.refunded),
                target_outstanding=self.outstanding(item),
                same_item=item == payment.item,
            )
        except Rejected:
            return
        payment.item, payment.applied = item, plan.applied

    @precondition(lambda self: self.account.payments)
    @rule(data=st.data(), amount=cents)
    def correct_amount(self, data: st.DataObject, amount: Decimal) -> None:
        """A payment recorded with the wrong amount: the amount received was wrong, so received changes too."""
        index = data.draw(st.integers(0, len(self.account.payments) - 1))
        payment = self.account.payments[index]
        try:
            plan = pay.plan_adjustment(
                pay.AdjustmentKind.AMOUNT,
                payment.status,
                pay.PaymentLedger(payment.amount, payment.applied, payment.credited, payment.refunded),
                target_outstanding=self.outstanding(payment.item),
                new_amount=amount,
                same_item=True,
            )
        except Rejected:
            return
        payment.amount, payment.applied = plan.amount, plan.applied

    @precondition(lambda self: self.account.payments)
    @rule(data=st.data(), outcome=st.sampled_from([None, *pay.DisputeOutcome]))
    def dispute(self, data: st.DataObject, outcome: pay.DisputeOutcome | None) -> None:
        """Opened (None), then won or lost: won counts as collected again, lost goes back like a refund."""
        index = data.draw(st.integers(0, len(self.account.payments) - 1))
        payment = self.account.payments[index]
        if outcome is None:
            try:
                pay.check_disputable(payment.status)
            except Rejected:
                return
            payment.status = PaymentStatus.DISPUTED
            return
        if payment.status is not PaymentStatus.DISPUTED:
            return
        status = pay.status_after_dispute(outcome)
        if status is PaymentStatus.CHARGED_BACK:
            self.money_goes_back(index, status)
        else:
            payment.status = status

    @precondition(lambda self: self.account.notes)
    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        number = data.draw(st.sampled_from(sorted(self.account.notes)))
        note = self.account.notes[number]
        later = note.note.expires_at
        if note.note.is_due_to_expire(later):
            note.note = note.note.expire(later)

    @precondition(lambda self: self.account.notes)
    @rule(data=st.data())
    def refund_credit(self, data: st.DataObject) -> None:
        """A billing manager pays a credit's unused balance back to the customer."""
        number = data.draw(st.sampled_from(sorted(self.account.notes)))
        note = self.account.notes[number]
        with contextlib.suppress(Rejected):
            note.note, _ = note.note.refund()

    @precondition(lambda self: self.account.notes)
    @rule(item=st.sampled_from(sorted(ITEMS)))
    def bill_paid_from_credit(self, item: str) -> None:
        """The auto-apply policy (oldest first) on a bill: it never uses more than the bill owes or the credit has."""
        numbered = [(n, note.note) for n, note in self.account.notes.items()]
        for number, amount in credit.oldest_first(numbered, self.outstanding(item), NOW):
            note = self.account.notes[number]
            note.note, used = note.note.apply(amount, item_outstanding=self.outstanding(item), now=NOW)
            self.sequence += 1
            application = credit.Application(f"A-{self.sequence}", number, used, NOW + timedelta(seconds=self.sequence))
            self.account.applications.append(Application(number, item, application))

    # --- what must hold ---

    @invariant()
    def money_received_is_allocated_held_as_credit_or_returned(self) -> None:
        allocations = sum((self.allocated(item) for item in ITEMS), ZERO)
        notes = [n.note for n in self.account.notes.values()]
        active = sum((n.available for n in notes), ZERO)
        forfeited = sum((n.remaining for n in notes if n.status is credit.Status.EXPIRED), ZERO)
        received = sum((p.amount for p in self.account.payments), ZERO)
        returned = sum((p.amount if p.status in GONE_BACK else p.refunded for p in self.account.payments), ZERO) + sum(
            (
                n.refunded
                for i, p in enumerate(self.account.payments)
                if p.status not in GONE_BACK
                for _, n in self.notes_of(i)
            ),
            ZERO,
        )
        assert allocations + active + forfeited == received - returned

    @invariant()
    def no_credit_is_applied_twice(self) -> None:
        for number, note in self.account.notes.items():
            used = sum((a.application.standing for a in self.account.applications if a.note == number), ZERO)
            assert used == note.note.applied
            assert note.note.applied + note.note.remaining + note.note.voided + note.note.refunded == note.note.amount
            assert min(note.note.applied, note.note.remaining, note.note.voided, note.note.refunded) >= 0

    @invariant()
    def no_item_is_owed_a_negative_amount(self) -> None:
        for item in ITEMS:
            assert self.outstanding(item) >= 0, item

    @invariant()
    def every_collected_payment_adds_up(self) -> None:
        for payment in self.account.payments:
            if counts_as_collected(payment.status):
                assert payment.applied >= 0 and payment.credited >= 0
                assert payment.applied + payment.credited + payment.refunded == payment.amount


MoneyOfOneAccount.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
TestMoneyOfOneAccount = MoneyOfOneAccount.TestCase
