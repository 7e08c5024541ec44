"""KPI's state changes: a billing manager's new alert threshold, and usage tracking through the outbox.

Each runs in the caller's transaction; what it stages is published after that transaction commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from services.kpi import domain
from services.kpi.domain import Comparison, Metric
from services.kpi.storage import alert_rules
from shared.contracts import Topic, new_envelope
from shared.contracts.events import UsageTracked
from shared.outbox import stage


async def create_alert(
    session: AsyncSession,
    *,
    metric: Metric,
    comparison: Comparison,
    threshold: Decimal,
    created_by: str,
    user_id: str,
) -> str:
    """A billing manager's new threshold, evaluated on the next event that moves its metric; returns its id."""
    domain.validate_rule(metric, comparison, threshold)
    alert_id = f"AL-{uuid.uuid4().hex[:12].upper()}"
    await session.execute(
        alert_rules.insert().values(
            alert_id=alert_id,
            metric=metric.value,
            comparison=comparison.value,
            threshold=threshold,
            created_by=created_by,
        )
    )
    await track_usage(
        session,
        "alert_setup",
        user_id,
        {
            "alert_type": metric.value,
            "threshold_value": str(threshold),
            "notification_method": f"event:{Topic.KPI_ALERTS}",
        },
    )
    return alert_id


async def track_usage(session: AsyncSession, event: str, user_id: str, properties: Mapping[str, str]) -> None:
    """Stage one usage-tracking event on `analytics.events.v1`."""
    usage = UsageTracked(event=event, user_id=user_id, properties=dict(properties), occurred_at=datetime.now(UTC))
    await stage(
        session,
        Topic.ANALYTICS_EVENTS,
        new_envelope("usage.tracked", source=domain.SOURCE, subject=user_id, data=usage),
    )
