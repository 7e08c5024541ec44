"""Collections' consumers of billing and payment events a delivery batch at a time.

Month-end brings a bill for every account, and a lockbox file a payment for thousands of bills, at once. One event
at a time, each recomputed its account's worklist row with eleven statements (a payment) or four (a bill). Here a
run of consecutive `payment.posted` events, or a whole batch of billing events, is applied with a fixed handful of
statements: the touched accounts are locked and read once with what their rows are computed from, every event is
then applied in order to that copy in memory (the worklist row recomputed after each one, by the same pure
`worklist.review` that `refresh_account` uses, so the disconnection events staged are the same ones in the same
order per account), and the rows, the items, the payments and the events are written once.

What the copy in memory does not model goes through the per-event handlers, in order, before the rest: the
accounts with an arrangement (their installments, allocations and tracking), with open promises to pay, or paying
an installment. Anything stranger (an item stored under another account, the same receipt twice in one run) raises
`OneByOne`: the batch rolls back and the consumer applies each event alone, with retries and the DLQ.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from opentelemetry.context import Context
from sqlalchemy import String, any_, bindparam, func, select, tuple_, union, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.collections import domain, worklist
from services.collections.runtime import SOURCE, Desk
from services.collections.storage import accounts, activities, arrangements, items, payments
from shared.contracts import Topic, counts_as_collected, new_envelope, parse_data
from shared.contracts.events import AccountUpserted, PaymentPosted, PaymentType
from shared.messaging import Applying, EventHandler, apply_in_runs
from shared.outbox import Outgoing, stage_all
from shared.receivables import ITEM_EVENT_TYPES, BillingAccount, ReceivableItem, billing_account, receivable_items

POSTED = "payment.posted"
ACCOUNT_UPSERTED = "account.upserted"
ITEM_COLUMNS = ("payment_type", "item_reference", "account_number", "description", "amount", "currency", "due_date")
ITEM_CHANGES = ITEM_COLUMNS[2:]  # what billing's re-issue changes (never `paid` or `arrangement_id`)
# The worklist row's columns a batch writes back (the executive and last contact are the desk's, never touched).
ROW_COLUMNS = (
    "name",
    "currency",
    "amount_owed",
    "amount_overdue",
    "oldest_overdue_due",
    "next_change_on",
    "refreshed_on",
    "arrangement_id",
    "plan_status",
    "disconnection",
    "disconnection_reason",
    "disconnection_since",
)

Key = tuple[str, str]  # (payment_type, item_reference)


# The reads below take their lists as one array each, not IN (...) with a parameter per value: their text is then the
# same for every batch, so asyncpg prepares each once, where every new list length was a new statement to prepare.
_wanted = bindparam("wanted", type_=ARRAY(String))
_LOCK_ACCOUNTS = (
    select(accounts)
    .where(accounts.c.account_number == any_(_wanted))
    .order_by(accounts.c.account_number)
    .with_for_update()
)
_SPECIAL = union(
    select(arrangements.c.account_number).where(
        arrangements.c.account_number == any_(_wanted),
        arrangements.c.status.not_in(worklist.SUPERSEDED_STATUSES),
    ),
    select(activities.c.account_number).where(
        activities.c.account_number == any_(_wanted),
        activities.c.promise_status == domain.PromiseStatus.OPEN.value,
    ),
)
_key_list = (
    func.unnest(bindparam("types", type_=ARRAY(String)), bindparam("references", type_=ARRAY(String)))
    .table_valued("payment_type", "item_reference")
    .render_derived(name="k")
)
_keys = select(_key_list.c.payment_type, _key_list.c.item_reference)
_LOCK_ITEMS = (
    select(items)
    .where(
        (
            (items.c.account_number == any_(bindparam("simple", type_=ARRAY(String))))
            & items.c.arrangement_id.is_(None)
            & (items.c.amount > items.c.paid)
        )
        | tuple_(items.c.payment_type, items.c.item_reference).in_(_keys)
    )
    .with_for_update()
)


# Executed with many rows: compiled once and cached, where `.values([...])` would compile each time.
_WRITE_ROWS = (
    update(accounts)
    .where(accounts.c.account_number == bindparam("b_account"))
    .values({name: bindparam(f"b_{name}") for name in ROW_COLUMNS})
)
_CREATE_ROWS = pg_insert(accounts).on_conflict_do_nothing().returning(accounts.c.account_number)


def new_row(account: str) -> dict[str, Any]:
    """A worklist row as `worklist.lock_account` creates it (the table's defaults), before anything changed it."""
    return {column.name: None for column in accounts.c} | {
        "account_number": account,
        "name": "",
        "currency": "USD",
        "amount_owed": domain.ZERO,
        "amount_overdue": domain.ZERO,
        "disconnection": domain.Disconnection.CLEAR.value,
        "disconnection_reason": "nothing overdue",
    }


class OneByOne(Exception):
    """The batch needs the one-event-at-a-time path."""


@dataclass
class Ledger:
    """The locked worklist rows of a batch's simple accounts and the items they are computed from, changed in memory
    event by event as the handlers would change the tables, then written once."""

    desk: Desk
    rows: dict[str, dict[str, Any]]
    seen: set[str]  # accounts that exist at this point of the one-by-one order (a name is filled in only then)
    items: dict[Key, dict[str, Any]]
    created: set[str] = field(default_factory=set)  # accounts not in the table yet: inserted by `write`
    staged: list[Outgoing] = field(default_factory=list)
    paid: dict[Key, Decimal] = field(default_factory=dict)  # what the batch's payments added to each item
    _owned: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # the items by account

    def __post_init__(self) -> None:
        for item in self.items.values():
            self._owned.setdefault(item["account_number"], []).append(item)

    def _item(self, key: Key, account: str) -> dict[str, Any]:
        item = self.items.get(key)
        if item is None:
            item = self.items[key] = {
                "payment_type": key[0],
                "item_reference": key[1],
                "account_number": account,
                "amount": None,
                "paid": domain.ZERO,
                "arrangement_id": None,
            }
            self._owned.setdefault(account, []).append(item)
        return item

    def describe(self, account: str, name: str, currency: str) -> None:
        self.rows[account] |= {"name": name, "currency": currency}
        self.seen.add(account)

    def fill_name(self, account: str, name: str) -> None:
        if account in self.seen and self.rows[account]["name"] == "":
            self.rows[account]["name"] = name

    def issue(self, item: ReceivableItem) -> None:
        self._item((item.kind.value, item.reference), item.account_number).update(item.as_row(*ITEM_COLUMNS))

    def pay(self, account: str, key: Key, share: Decimal) -> None:
        self._item(key, account)["paid"] += share
        self.paid[key] = self.paid.get(key, domain.ZERO) + share

    def refresh(self, account: str, context: Context | None) -> None:
        """`worklist.refresh_account` on the copy: the row recomputed, its disconnection events staged."""
        self.seen.add(account)
        row = self.rows[account]
        owing = [
            domain.OpenItem(i["amount"], i["paid"], i["due_date"])
            for i in self._owned.get(account, ())
            if i["arrangement_id"] is None and i["amount"] is not None and i["amount"] > i["paid"]
        ]
        values, announced = worklist.review(account, row["currency"], row["disconnection"], None, owing, self.desk)
        row |= values
        for kind, changed in announced:
            envelope = new_envelope(kind, source=SOURCE, subject=account, data=changed)
            self.staged.append(Outgoing(Topic.COLLECTIONS_EVENTS, envelope, context))

    async def write(self, session: AsyncSession) -> None:
        """The rows and the events, each in one statement (items are the caller's: billing and payments differ)."""
        if self.rows.keys() - self.seen:
            raise OneByOne("an account the events would not have created")  # e.g. only payments seen before
        changed = [
            {"b_account": account} | {f"b_{name}": row[name] for name in ROW_COLUMNS}
            for account, row in self.rows.items()
            if account not in self.created
        ]
        if changed:
            await session.execute(_WRITE_ROWS, changed)
        if self.created:
            new = [
                {"account_number": account} | {name: self.rows[account][name] for name in ROW_COLUMNS}
                for account in sorted(self.created)
            ]
            inserted = (await session.execute(_CREATE_ROWS, new)).scalars().all()
            if len(inserted) != len(new):
                raise OneByOne("an account was created meanwhile")
        await stage_all(session, self.staged)


async def _special_accounts(session: AsyncSession, wanted: Collection[str]) -> set[str]:
    """The accounts whose rows do not follow from their items alone: an arrangement speaks for them, or a payment
    counts toward an open promise to pay."""
    return set((await session.execute(_SPECIAL, {"wanted": list(wanted)})).scalars())


async def open_ledger(
    session: AsyncSession, desk: Desk, touches: Sequence[tuple[str, Key | None]], special: Collection[str]
) -> Ledger:
    """Lock the rows of the accounts `touches` names (each with the item it changes, if any), those already there
    first, in account order, and read what the simple ones are computed from. `special` accounts (and those found
    to have an arrangement, an open promise or a covered item) are left to the handlers: not in the ledger."""
    wanted = sorted({account for account, _ in touches})
    keys = sorted({key for _, key in touches if key is not None})
    found = {
        row.account_number: dict(row._mapping) for row in await session.execute(_LOCK_ACCOUNTS, {"wanted": wanted})
    }
    simple = set(wanted) - set(special) - await _special_accounts(session, wanted)
    stored = {
        (row.payment_type, row.item_reference): dict(row._mapping)
        for row in await session.execute(
            _LOCK_ITEMS,
            {"simple": sorted(simple), "types": [k[0] for k in keys], "references": [k[1] for k in keys]},
        )
    }
    owner: dict[Key, str] = {}
    for account, key in touches:
        if key is None:
            continue
        if owner.setdefault(key, account) != account:
            raise OneByOne("one item under two accounts")
        if key in stored and stored[key]["account_number"] != account:
            raise OneByOne("an item stored under another account")
        if key in stored and stored[key]["arrangement_id"] is not None:
            simple.discard(account)
    # Accounts not there yet are created by `Ledger.write`, with their final values: one row version, not one
    # with `lock_account`'s defaults and then another (every index, trigram ones included, written twice).
    missing = sorted(simple - found.keys())
    found |= {account: new_row(account) for account in missing}
    return Ledger(
        desk,
        rows={account: found[account] for account in sorted(simple)},
        seen=simple - set(missing),
        created=set(missing),
        items={key: item for key, item in stored.items() if item["account_number"] in simple},
    )


class Batches:
    """The batch handlers of collections' billing and payments consumers."""

    def __init__(self, desk: Desk, billing: Mapping[str, EventHandler], payments: Mapping[str, EventHandler]) -> None:
        self.desk = desk
        self.billing = billing
        self.payments = payments

    # --- billing.receivables.v1 ---

    async def on_billing_batch(self, session: AsyncSession, batch: Sequence[Applying]) -> None:
        """Accounts described and items issued, in order: each item event refreshes its accounts after it."""
        events: list[tuple[Applying, str, BillingAccount | Sequence[ReceivableItem]]] = []
        touches: list[tuple[str, Key | None]] = []
        for applying in batch:
            envelope = applying.envelope
            if envelope.type == ACCOUNT_UPSERTED:
                described = billing_account(parse_data(envelope, AccountUpserted))
                events.append((applying, described.account_number, described))
                touches.append((described.account_number, None))
            elif envelope.type in ITEM_EVENT_TYPES and envelope.source != SOURCE:  # our own plans are no items
                found = receivable_items(envelope)
                owners = {item.account_number for item in found}
                if len(owners) > 1:
                    raise OneByOne("an event for several accounts")
                if owners:
                    events.append((applying, owners.pop(), found))
                    touches.extend((item.account_number, (item.kind.value, item.reference)) for item in found)
        if not events:
            return  # only our own plans coming back: nothing to apply
        ledger = await open_ledger(session, self.desk, touches, special=())
        alone = [applying for applying, account, _ in events if account not in ledger.rows]
        await apply_in_runs(session, alone, (), _no_run, self.billing)
        issued: dict[Key, None] = {}  # in first-seen order
        for applying, account, what in events:
            if account not in ledger.rows:
                continue
            if isinstance(what, BillingAccount):
                ledger.describe(account, what.name, what.currency)
                continue
            for item in what:
                ledger.issue(item)
                issued[(item.kind.value, item.reference)] = None
            ledger.refresh(account, applying.context)
        if issued:
            statement = pg_insert(items)
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=["payment_type", "item_reference"],
                    set_={name: statement.excluded[name] for name in ITEM_CHANGES},
                ),
                [{name: ledger.items[key][name] for name in ITEM_COLUMNS} for key in issued],
            )
        await ledger.write(session)

    # --- payments.events.v1 ---

    async def on_payments_batch(self, session: AsyncSession, batch: Sequence[Applying]) -> None:
        await apply_in_runs(session, batch, (POSTED,), self.post, self.payments)

    async def post(self, session: AsyncSession, run: Sequence[Applying]) -> None:
        """Consecutive `payment.posted` events: each stored, counted toward its item, its account refreshed."""
        posted = [parse_data(applying.envelope, PaymentPosted) for applying in run]
        numbers = [p.receipt_number for p in posted]
        if len(set(numbers)) != len(numbers):
            raise OneByOne("a receipt posted twice in one run")
        shares = {p.receipt_number: _share(p) for p in posted}
        if any(share is not None and share < 0 for share in shares.values()):
            raise OneByOne("a payment that takes from its item")
        ledger = await open_ledger(
            session,
            self.desk,
            [(p.consumer.account_number, (p.item.payment_type.value, p.item.item_reference)) for p in posted],
            special={p.consumer.account_number for p in posted if p.item.payment_type is PaymentType.INSTALLMENT},
        )
        alone = [
            applying for applying, p in zip(run, posted, strict=True) if p.consumer.account_number not in ledger.rows
        ]
        await apply_in_runs(session, alone, (), _no_run, self.payments)
        mine = [
            (applying, p) for applying, p in zip(run, posted, strict=True) if p.consumer.account_number in ledger.rows
        ]
        if not mine:
            return
        # Executed with many rows: compiled once and cached, where .values([...]) compiles each time.
        inserted = set(
            (
                await session.execute(
                    pg_insert(payments).on_conflict_do_nothing().returning(payments.c.receipt_number),
                    [_payment_row(p, shares[p.receipt_number]) for _, p in mine],
                )
            ).scalars()
        )
        for applying, p in mine:
            if p.receipt_number not in inserted:
                continue  # the same payment announced again
            account = p.consumer.account_number
            ledger.fill_name(account, p.consumer.name)
            share = shares[p.receipt_number]
            if share is not None:
                ledger.pay(account, (p.item.payment_type.value, p.item.item_reference), share)
            ledger.refresh(account, applying.context)
        if ledger.paid:
            statement = pg_insert(items)
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=["payment_type", "item_reference"],
                    set_={"paid": items.c.paid + statement.excluded.paid},
                ),
                [
                    {
                        "payment_type": key[0],
                        "item_reference": key[1],
                        "account_number": ledger.items[key]["account_number"],
                        "paid": share,
                    }
                    for key, share in ledger.paid.items()
                ],
            )
        await ledger.write(session)


async def _no_run(session: AsyncSession, run: Sequence[Applying]) -> None:
    raise AssertionError("every event here is applied by its own handler")


def _payment_row(posted: PaymentPosted, share: Decimal | None) -> dict[str, Any]:
    return {
        "receipt_number": posted.receipt_number,
        "payment_id": posted.payment_id,
        "account_number": posted.consumer.account_number,
        "payment_type": posted.item.payment_type.value,
        "item_reference": posted.item.item_reference,
        "amount": posted.amount.amount,
        "payment_date": posted.payment_date,
        "method": posted.method,
        "received_by": posted.received_by,
        "status": posted.status,
        "item_share": share if share is not None else domain.ZERO,
    }


def _share(posted: PaymentPosted) -> Decimal | None:
    """What a payment settles on its item (`Projections._apply` without an arrangement); None: it does not count."""
    if not counts_as_collected(posted.status):
        return None
    return min(posted.amount.amount, max(posted.item.due.amount, domain.ZERO))
