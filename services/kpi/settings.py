from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class KpiSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KPI_", extra="ignore", populate_by_name=True)

    service_name: str = "kpi"
    http_port: int = Field(default=8105, ge=1, le=65535)
    time_zone: str = Field(
        default="UTC",
        description="The utility's IANA time zone: what 'today' and a posting's day mean. Changing it applies to "
        "events from then on; run `paydesk kpi-rebuild` to re-bucket the past.",
        examples=["America/Chicago"],
    )
    currency: str = Field(default="USD", min_length=3, max_length=3, description="Currency of the header KPIs.")
    payment_consumers: int = Field(
        default=1,
        ge=1,
        le=32,
        description="Event consumers of payments.events.v1 in this process, in one group: the topic's partitions are "
        "applied in parallel (order within a partition, so within an account, is kept). More than the partition "
        "count adds nothing. Each extra member costs a group rebalance at start; running more kpi instances does the "
        "same across machines.",
    )
    dashboard_refresh_seconds: float = Field(default=5.0, gt=0, description="How often the dashboard page polls.")

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)
