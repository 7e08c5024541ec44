"""Money leaving: Stripe transfers to connected accounts, and ISO 20022 pain.001 credit-transfer files.

One Stripe idempotency key per payout (`paydesk-payout-<payout id>`), sent with the same parameters on every
attempt: a run executed twice, or retried after a crash between Stripe's answer and our commit, gets Stripe's
first answer back instead of a second transfer. Stripe keeps a key for 24 hours only: a payout whose earlier
attempt may have reached Stripe is first looked up (`find_transfer`) and never sent again if found.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import stripe
from sepaxml import SepaTransfer

from services.payouts import domain
from services.payouts.domain import minor_integer
from services.payouts.settings import DebtorAccount, PayoutsSettings

# Worth trying again later with the same key: the network, Stripe's own errors, rate limits.
TRANSIENT = (stripe.APIConnectionError, stripe.APIError, stripe.RateLimitError)


def stripe_client(settings: PayoutsSettings) -> stripe.StripeClient:
    """A Stripe client on `STRIPE_API_BASE`; a failed attempt is retried by executing the run again."""
    return stripe.StripeClient(
        settings.stripe_api_key.get_secret_value() or "sk_unset",
        base_addresses={"api": settings.stripe_api_base},
        http_client=stripe.HTTPXClient(timeout=15),
        max_network_retries=0,
    )


def idempotency_key(payout_id: str) -> str:
    """The one key of a payout at Stripe, for every attempt, forever."""
    return f"paydesk-payout-{payout_id}"


@dataclass(frozen=True)
class TransferRequest:
    payout_id: str
    run_id: str
    payee_id: str
    destination: str
    amount: Decimal
    currency: str

    def params(self) -> dict[str, Any]:
        """Exactly the same on every attempt (Stripe refuses a reused key with other parameters)."""
        return {
            "amount": minor_integer(self.amount, self.currency),
            "currency": self.currency.lower(),
            "destination": self.destination,
            "transfer_group": self.run_id,
            "description": f"Paydesk payout {self.payout_id}",
            "metadata": {"paydesk_payout_id": self.payout_id, "paydesk_run_id": self.run_id, "payee_id": self.payee_id},
        }


async def send_transfer(client: stripe.StripeClient, request: TransferRequest) -> str:
    """Create (or get back, on a retry) the payout's transfer; returns the Stripe transfer id."""
    transfer = await client.v1.transfers.create_async(
        params=request.params(),  # type: ignore[arg-type]
        options={"idempotency_key": idempotency_key(request.payout_id)},
    )
    return str(transfer.id)


async def find_transfer(client: stripe.StripeClient, request: TransferRequest) -> str | None:
    """The payout's transfer if Stripe has one, found without its idempotency key (Stripe forgets keys after 24
    hours): every transfer of the payout's `transfer_group` (its run), matched by our metadata and the amount."""
    params = request.params()
    listed = await client.v1.transfers.list_async(
        params={"transfer_group": request.run_id, "destination": request.destination, "limit": 100}
    )
    found = [transfer.to_dict() async for transfer in listed.auto_paging_iter()]
    return domain.transfer_of(request.payout_id, params["amount"], request.currency, found)


# --- pain.001 ---


@dataclass(frozen=True)
class CreditTransfer:
    payout_id: str
    name: str
    iban: str
    bic: str | None
    amount: Decimal
    currency: str
    description: str


def debtor_for(accounts: list[DebtorAccount], currency: str) -> DebtorAccount | None:
    """The utility's account that pays bank payouts in `currency` (the first configured one)."""
    return next((a for a in accounts if a.currency.upper() == currency.upper()), None)


@dataclass(frozen=True)
class BankFile:
    message_id: str
    content: bytes
    control_sum: Decimal
    count: int


def credit_transfer_file(debtor: DebtorAccount, transfers: list[CreditTransfer], *, execution_date: date) -> BankFile:
    """One pain.001.001.03 file (validated against the schema by sepaxml) paying `transfers` from `debtor`.

    The payout id is each transaction's end-to-end id, so the bank's statement lines name the payout.
    """
    config: dict[str, Any] = {
        "name": debtor.name,
        "IBAN": debtor.iban,
        "batch": True,
        "currency": debtor.currency,
        # SEPA's service level only for euro; other currencies go as plain credit transfers.
        "domestic": debtor.currency != "EUR",
    }
    if debtor.bic:
        config["BIC"] = debtor.bic
    document = SepaTransfer(config, clean=True)
    total = Decimal(0)
    for transfer in transfers:
        payment: dict[str, Any] = {
            "name": transfer.name,
            "IBAN": transfer.iban,
            "amount": minor_integer(transfer.amount, transfer.currency),
            "currency": transfer.currency,
            "execution_date": execution_date,
            "description": transfer.description,
            "endtoend_id": transfer.payout_id,
        }
        if transfer.bic:
            payment["BIC"] = transfer.bic
        document.add_payment(payment)
        total += transfer.amount
    content = document.export(validate=True, pretty_print=True)
    message_id = str(document.msg_id)
    return BankFile(message_id=message_id, content=content, control_sum=total, count=len(transfers))


def file_id(run_id: str, account_id: str) -> str:
    """A stable id for a run's file of one debtor account."""
    return "PAIN-" + hashlib.sha256(f"{run_id}/{account_id}".encode()).hexdigest()[:16].upper()
