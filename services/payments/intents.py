"""Customers paying online: the Stripe PaymentIntent for one open item, made through the Stripe API.

Payments only asks Stripe for the intent (amount, currency, and which item it pays in its metadata) and hands
the client secret to the customer's browser; card details go from the browser to Stripe and never pass here.
What the customer then pays comes back by the webhook path (gateway_bridge -> `gateway.events.v1` ->
`online.py`), which posts the payment under the intent's id.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import stripe
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession
from stripe.params import PaymentIntentCreateParams

from services.payments import arrangements, queries
from services.payments.settings import PaymentsSettings
from services.payments.storage import idempotency_keys
from shared import idempotency
from shared.errors import NotFound, Rejected
from shared.money import minor_units


class GatewayUnavailable(Rejected):
    """Stripe refused the request or did not answer: nothing was created here; try again later."""

    status = 502


@dataclass(frozen=True)
class Intent:
    payment_intent_id: str
    client_secret: str
    amount: Decimal
    currency: str
    metadata: dict[str, str]


def stripe_client(settings: PaymentsSettings) -> stripe.StripeClient:
    """A Stripe client on `STRIPE_API_BASE` (as gateway_bridge's); no retries hidden in the library."""
    return stripe.StripeClient(
        settings.stripe_api_key.get_secret_value() or "sk_unset",
        base_addresses={"api": settings.stripe_api_base},
        http_client=stripe.HTTPXClient(timeout=10),
        max_network_retries=0,
    )


def _intent(found: Any) -> Intent:
    currency = str(found["currency"]).upper()
    scale = minor_units(currency)
    return Intent(
        payment_intent_id=str(found["id"]),
        client_secret=str(found["client_secret"]),
        amount=Decimal(int(found["amount"])).scaleb(-scale),
        currency=currency,
        metadata={str(k): str(v) for k, v in (found.get("metadata") or {}).items()},
    )


async def create(
    client: stripe.StripeClient,
    *,
    account_number: str,
    payment_type: str,
    item_reference: str,
    amount: Decimal,
    currency: str,
    key: str,
) -> Intent:
    """A PaymentIntent for `amount`; Stripe's own idempotency key makes a retried request the same intent."""
    minor = int(amount.scaleb(minor_units(currency)))
    params: PaymentIntentCreateParams = {
        "amount": minor,
        "currency": currency.lower(),
        "automatic_payment_methods": {"enabled": True},
        "metadata": {"account_number": account_number, "payment_type": payment_type, "item_reference": item_reference},
    }
    try:
        created = await client.v1.payment_intents.create_async(params=params, options={"idempotency_key": key})
    except stripe.StripeError as exc:
        raise GatewayUnavailable(
            "gateway_unavailable", f"the payment gateway refused or did not answer: {exc}"
        ) from exc
    return _intent(created.to_dict())


async def retrieve(client: stripe.StripeClient, payment_intent_id: str, account_number: str) -> Intent:
    """The intent, if Stripe has it and it was made for `account_number`; otherwise NotFound (no probing)."""
    try:
        found = await client.v1.payment_intents.retrieve_async(payment_intent_id)
    except stripe.InvalidRequestError as exc:
        raise NotFound("payment_intent_not_found", f"no payment intent {payment_intent_id}") from exc
    except stripe.StripeError as exc:
        raise GatewayUnavailable("gateway_unavailable", f"the payment gateway did not answer: {exc}") from exc
    intent = _intent(found.to_dict())
    if intent.metadata.get("account_number") != account_number:
        raise NotFound("payment_intent_not_found", f"no payment intent {payment_intent_id}")
    return intent


# --- the customer's two calls: start paying an item, and follow the payment ---

START_PAYMENT = "payment_intent.create"


async def start_payment(
    session: AsyncSession,
    client: stripe.StripeClient,
    *,
    account_number: str,
    payment_type: str,
    item_reference: str,
    key: str,
) -> Intent:
    """A PaymentIntent for the item's outstanding amount, once per `Idempotency-Key`: a retry gets the same intent
    (read back from Stripe). Nothing about the payment is stored here until the gateway reports it."""
    created: list[Intent] = []

    async def run() -> str:
        item = await queries.open_item(session, account_number, payment_type, item_reference)
        await arrangements.check_payable(session, payment_type, item_reference)
        if item is None:
            raise NotFound(
                "unknown_item", f"no {payment_type} {item_reference} on this account", field="item_reference"
            )
        if item.outstanding <= 0:
            raise Rejected("nothing_owed", f"{item_reference} is paid", field="item_reference")
        intent = await create(
            client,
            account_number=account_number,
            payment_type=payment_type,
            item_reference=item_reference,
            amount=item.outstanding,
            currency=item.currency,
            # Scoped to the account: Stripe then returns the same intent if our transaction is retried.
            key=f"paydesk-payments/{account_number}/{key}",
        )
        created.append(intent)
        return intent.payment_intent_id

    request = {"account_number": account_number, "payment_type": payment_type, "item_reference": item_reference}
    intent_id = await idempotency.once(
        session, idempotency_keys, operation=START_PAYMENT, key=key, request=request, run=run
    )
    return created[0] if created else await retrieve(client, intent_id, account_number)


async def follow_payment(
    session: AsyncSession, client: stripe.StripeClient, *, account_number: str, payment_intent_id: str
) -> Row[Any] | None:
    """The payment the gateway recorded for the intent (None while none has arrived). An intent of another
    account, or one Stripe does not know, is NotFound."""
    payment = await queries.payment_for_intent(session, payment_intent_id)
    if payment is not None:
        if payment.account_number != account_number:
            raise NotFound("payment_intent_not_found", f"no payment intent {payment_intent_id}")
        return payment
    await retrieve(client, payment_intent_id, account_number)
    return None
