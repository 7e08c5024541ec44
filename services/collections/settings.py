from decimal import Decimal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class CollectionsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="COLLECTIONS_", extra="ignore", populate_by_name=True)

    service_name: str = "collections"
    http_port: int = Field(default=8106, ge=1, le=65535)
    arrangement_prefix: str = Field(default="PA-", min_length=1, max_length=10, description="Arrangement id prefix.")
    approval_total: Decimal = Field(
        default=Decimal("5000.00"), gt=0, description="Arrangements above this total need a billing manager."
    )
    approval_installments: int = Field(
        default=12, ge=1, description="Arrangements with more installments than this need a billing manager."
    )
    max_grace_days: int = Field(default=30, ge=0, le=90, description="The most grace an executive may give.")
    break_after_missed: int = Field(default=2, ge=1, description="Missed installments after which a plan is Broken.")
    disconnection_threshold_days: int = Field(
        default=60, ge=1, description="Days overdue, with no arrangement, after which an account may be disconnected."
    )
    disconnection_threshold_amount: Decimal = Field(
        default=Decimal("50.00"), ge=0, description="Least amount overdue for an account to be disconnected."
    )
    compliance_check_seconds: float = Field(
        default=300.0, gt=0, description="How often the compliance scheduler runs a pass."
    )
    timezone: str = Field(default="UTC", description="The utility's time zone: what 'today' means for due dates.")
