"""What collections' handlers share at run time: the clock tests can set, the rules from settings, and the one
way to stage an event, a tracking event or an alert."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from services.collections import domain
from services.collections.settings import CollectionsSettings
from services.collections.storage import alerts
from shared.contracts import Topic, new_envelope
from shared.contracts.events import CollectionsAlertRaised, UsageTracked
from shared.outbox import stage

SOURCE = "collections"


class Clock:
    """The service's idea of now: the wall clock, or a moment a test (or an operator's CLI) sets."""

    def __init__(self, zone: ZoneInfo, fixed: datetime | None = None) -> None:
        self.zone = zone
        self.fixed = fixed

    def now(self) -> datetime:
        return self.fixed or datetime.now(UTC)

    def today(self) -> date:
        """The utility's calendar day: due dates and grace are counted in it."""
        return self.now().astimezone(self.zone).date()

    def set(self, moment: datetime | None) -> None:
        """Freeze the clock at `moment` (None: back to the wall clock)."""
        if moment is not None and moment.tzinfo is None:
            raise ValueError("the clock is set to an aware datetime")
        self.fixed = moment


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
