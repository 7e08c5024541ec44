"""What collections' handlers share at run time: the service's clock (`shared.scheduling.Clock`, which tests
set), the rules from settings, and the one way to stage an event, a tracking event or an alert."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from services.collections import domain
from services.collections.settings import CollectionsSettings
from services.collections.storage import alerts
from shared.contracts import Topic, new_envelope
from shared.contracts.events import CollectionsAlertRaised, UsageTracked
from shared.outbox import stage
from shared.scheduling import Clock

SOURCE = "collections"


@dataclass
class Desk:
    """The clock and the rules every collections handler works with."""

    clock: Clock
    limits: domain.Limits = field(default_factory=domain.Limits)
    disconnection: domain.DisconnectionPolicy = field(default_factory=domain.DisconnectionPolicy)
    break_after_missed: int = 2
    arrangement_prefix: str = "PA-"

    @classmethod
    def from_settings(cls, settings: CollectionsSettings) -> Desk:
        return cls(
            clock=Clock(ZoneInfo(settings.timezone)),
            limits=domain.Limits(
                approval_total=settings.approval_total,
                approval_installments=settings.approval_installments,
                max_grace_days=settings.max_grace_days,
            ),
            disconnection=domain.DisconnectionPolicy(
                threshold_days=settings.disconnection_threshold_days,
                threshold_amount=settings.disconnection_threshold_amount,
            ),
            break_after_missed=settings.break_after_missed,
            arrangement_prefix=settings.arrangement_prefix,
        )

    def arrangement_id(self, seq: int) -> str:
        return f"{self.arrangement_prefix}{self.clock.today().year}-{seq:06d}"


async def publish(session: AsyncSession, event_type: str, account: str, data: BaseModel) -> None:
    """Stage one of collections' own events in the caller's transaction."""
    await stage(session, Topic.COLLECTIONS_EVENTS, new_envelope(event_type, source=SOURCE, subject=account, data=data))


def _text(value: object) -> str:
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)


async def track(session: AsyncSession, event: str, user: str, properties: dict[str, object], *, at: datetime) -> None:
    """Stage a usage-tracking event of the seed's recovery-executive plan (`usage.tracked`)."""
    usage = UsageTracked(
        event=event,
        user_id=user,
        properties={k: _text(v) for k, v in properties.items()},
        occurred_at=at,
    )
    await stage(session, Topic.ANALYTICS_EVENTS, new_envelope("usage.tracked", source=SOURCE, subject=user, data=usage))


async def raise_alert(
    session: AsyncSession,
    *,
    executive: str,
    account: str,
    kind: str,
    message: str,
    arrangement_id: str | None,
    at: datetime,
) -> str:
    """An alert in the executive's queue, announced as `collections.alert_raised`."""
    alert_id = f"AL-{uuid.uuid4().hex[:12]}"
    await session.execute(
        alerts.insert().values(
            alert_id=alert_id,
            executive=executive,
            account_number=account,
            kind=kind,
            message=message,
            arrangement_id=arrangement_id,
            raised_at=at,
        )
    )
    raised = CollectionsAlertRaised(
        alert_id=alert_id,
        executive=executive,
        account_number=account,
        kind=kind,
        message=message,
        arrangement_id=arrangement_id,
        raised_at=at,
    )
    await publish(session, "collections.alert_raised", account, raised)
    return alert_id
