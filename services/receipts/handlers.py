"""Receipts' event handlers."""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.receipts import domain
from services.receipts.storage import receipts
from shared.contracts import Envelope, parse_data
from shared.contracts.events import PaymentPosted


async def on_payment_posted(session: AsyncSession, envelope: Envelope) -> None:
    posted = parse_data(envelope, PaymentPosted)
    await session.execute(
        pg_insert(receipts)
        .values(
            receipt_number=posted.receipt_number,
            payment_id=posted.payment_id,
            account_number=posted.consumer.account_number,
            consumer_name=posted.consumer.name,
            amount=posted.amount.amount,
            currency=posted.amount.currency,
            amount_text=domain.amount_line(posted),
            posted_at=posted.posted_at,
            payment=posted.model_dump(mode="json"),
        )
        .on_conflict_do_nothing(index_elements=["receipt_number"])
    )


PAYMENT_HANDLERS = {"payment.posted": on_payment_posted}
