"""KPI alerts: the thresholds billing managers set, checked each time an event moves their metric.

Crossing into breach stages `alert.raised` on `kpi.alerts.v1` (and logs a warning) in the transaction of the
event that crossed it; a threshold stays crossed until the value comes back, so it raises once per crossing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.kpi import domain, queries
from services.kpi.domain import AlertRule, Comparison, Metric
from services.kpi.storage import alert_rules, alert_states
from shared.contracts import Topic, new_envelope
from shared.contracts.events import AlertRaised
from shared.outbox import stage

log = logging.getLogger(__name__)


# One state row written back with what the checks left (executed with many rows).
_SET_STATE = (
    update(alert_states)
    .where(alert_states.c.alert_id == bindparam("s_alert_id"), alert_states.c.window == bindparam("s_window"))
    .values(
        breached=bindparam("s_breached"),
        value=bindparam("s_value"),
        raised_count=bindparam("s_raised_count"),
        last_raised_at=bindparam("s_last_raised_at"),
    )
)


class AlertRuleCache:
    """Thresholds are needed on almost every event but change rarely, so they are kept in memory for `ttl`
    seconds: a rule created on this instance applies at once, one created on another instance within `ttl`."""

    def __init__(self, ttl: float = 2.0) -> None:
        self.ttl = ttl
        self._rules: list[AlertRule] | None = None
        self._loaded_at = 0.0

    async def for_metric(self, session: AsyncSession, metric: Metric) -> list[AlertRule]:
        if self._rules is None or time.monotonic() - self._loaded_at > self.ttl:
            rows = (await session.execute(select(alert_rules))).all()
            self._rules = [AlertRule(r.alert_id, Metric(r.metric), Comparison(r.comparison), r.threshold) for r in rows]
            self._loaded_at = time.monotonic()
        return [rule for rule in self._rules if rule.metric is metric]

    def invalidate(self) -> None:
        self._rules = None


class Alerts:
    """Checks the thresholds on one metric; `currency` is the one the collection rate is measured in."""

    def __init__(self, currency: str, rules: AlertRuleCache | None = None) -> None:
        self.currency = currency
        self.rules = rules or AlertRuleCache()

    def rules_changed(self) -> None:
        """A rule was created here: apply it from the next event on."""
        self.rules.invalidate()

    async def check_collection_rate(self, session: AsyncSession, period: str) -> None:
        if not await self.rules.for_metric(session, Metric.COLLECTION_RATE):
            return
        start, end = domain.month_bounds(period)
        collected = await queries.collections(session, start, end, self.currency)
        due = await queries.due(session, start, end, self.currency)
        await self._check(session, Metric.COLLECTION_RATE, period, domain.collection_rate(collected.collected, due))

    async def check_pending_verifications(self, session: AsyncSession) -> None:
        if not await self.rules.for_metric(session, Metric.PENDING_VERIFICATIONS):
            return
        pending = await queries.pending_verifications(session)
        await self._check(session, Metric.PENDING_VERIFICATIONS, "current", Decimal(pending))

    async def check_failed_online_payments(self, session: AsyncSession, hour: datetime, failures: int) -> None:
        label = domain.hour_window_label(hour)
        await self._check(session, Metric.FAILED_ONLINE_PAYMENTS_PER_HOUR, label, Decimal(failures))

    async def check_missed_installments(self, session: AsyncSession, day: date) -> None:
        if not await self.rules.for_metric(session, Metric.MISSED_INSTALLMENTS_PER_DAY):
            return
        missed = await queries.missed_installments(session, day)
        await self._check(session, Metric.MISSED_INSTALLMENTS_PER_DAY, day.isoformat(), Decimal(missed))

    async def check_in_order(self, session: AsyncSession, checks: Sequence[tuple[Metric, str, Decimal | None]]) -> None:
        """The checks one event at a time makes (metric, window, value after the event), in its order, with the
        states read and written once for all: the same alerts raised at the same checks, the same state rows."""
        rules = {metric: await self.rules.for_metric(session, metric) for metric in {m for m, _, _ in checks}}
        pairs = sorted({(rule.alert_id, window) for metric, window, _ in checks for rule in rules[metric]})
        if not pairs:
            return
        await session.execute(
            pg_insert(alert_states).on_conflict_do_nothing(),
            [{"alert_id": alert_id, "window": window, "breached": False} for alert_id, window in pairs],
        )
        found = await session.execute(
            select(alert_states)
            .where(tuple_(alert_states.c.alert_id, alert_states.c.window).in_(pairs))
            .order_by(alert_states.c.alert_id, alert_states.c.window)
            .with_for_update()
        )
        states = {(row.alert_id, row.window): dict(row._mapping) for row in found}
        for metric, window, value in checks:
            for rule in rules[metric]:
                state = states[(rule.alert_id, window)]
                breached = rule.breached_by(value)
                if domain.should_raise(state["breached"], breached):
                    assert value is not None  # a breach always has a value
                    now = datetime.now(UTC)
                    await self._raise(session, rule, metric, window, value, now)
                    state["raised_count"] += 1
                    state["last_raised_at"] = now
                state["breached"], state["value"] = breached, value
        await session.execute(_SET_STATE, [{f"s_{name}": v for name, v in state.items()} for state in states.values()])

    async def _check(self, session: AsyncSession, metric: Metric, window: str, value: Decimal | None) -> None:
        """Compare `value` with every rule on `metric` in `window`; raise an alert on each crossing into breach."""
        for rule in await self.rules.for_metric(session, metric):
            await session.execute(
                pg_insert(alert_states)
                .values(alert_id=rule.alert_id, window=window, breached=False)
                .on_conflict_do_nothing()
            )
            # The row lock makes two event consumers evaluating one window at once raise at most one alert.
            state = (
                await session.execute(
                    select(alert_states)
                    .where(alert_states.c.alert_id == rule.alert_id, alert_states.c.window == window)
                    .with_for_update()
                )
            ).one()
            breached = rule.breached_by(value)
            changes: dict[str, Any] = {"breached": breached, "value": value}
            if domain.should_raise(state.breached, breached):
                assert value is not None  # a breach always has a value
                now = datetime.now(UTC)
                await self._raise(session, rule, metric, window, value, now)
                changes.update(raised_count=alert_states.c.raised_count + 1, last_raised_at=now)
            await session.execute(
                update(alert_states)
                .where(alert_states.c.alert_id == rule.alert_id, alert_states.c.window == window)
                .values(**changes)
            )

    async def _raise(
        self, session: AsyncSession, rule: AlertRule, metric: Metric, window: str, value: Decimal, now: datetime
    ) -> None:
        raised = AlertRaised(
            alert_id=rule.alert_id,
            metric=metric.value,
            comparison=rule.comparison.value,
            threshold=rule.threshold,
            value=value,
            period=window,
            raised_at=now,
        )
        await stage(
            session,
            Topic.KPI_ALERTS,
            new_envelope("alert.raised", source=domain.SOURCE, subject=metric.value, data=raised),
        )
        log.warning(
            "alert raised",
            extra={
                "alert_id": rule.alert_id,
                "metric": metric.value,
                "comparison": rule.comparison.value,
                "threshold": str(rule.threshold),
                "value": str(value),
                "window": window,
            },
        )
