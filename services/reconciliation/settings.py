from decimal import Decimal

from pydantic import AliasChoices, BaseModel, Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class RuleSetting(BaseModel):
    """One matching rule as configured; the list order is the priority."""

    name: str
    kind: str = Field(pattern="^(one_to_one|one_to_many|many_to_one)$")
    amount_tolerance: Decimal = Field(default=Decimal(0), ge=0)
    date_tolerance_days: int = Field(default=0, ge=0, le=60)
    require_reference: bool = False


DEFAULT_RULES = [
    RuleSetting(name="reference_exact", kind="one_to_one", date_tolerance_days=3, require_reference=True),
    RuleSetting(name="group_by_reference", kind="one_to_many", date_tolerance_days=3, require_reference=True),
    RuleSetting(name="lines_by_reference", kind="many_to_one", date_tolerance_days=3, require_reference=True),
    RuleSetting(name="group_by_amount_date", kind="one_to_many", date_tolerance_days=1),
    RuleSetting(name="amount_date", kind="one_to_one", date_tolerance_days=1),
]


class ReconciliationSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RECONCILIATION_", extra="ignore", populate_by_name=True)
    # Uploads: a bank statement file: a day of a busy account runs to tens of MiB in camt.053.
    max_request_body_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        validation_alias=AliasChoices("PAYDESK_MAX_REQUEST_BODY_BYTES", "max_request_body_bytes"),
    )

    service_name: str = "reconciliation"
    http_port: int = Field(default=8107, ge=1, le=65535)
    rules: list[RuleSetting] = Field(default_factory=lambda: list(DEFAULT_RULES), description="In priority order.")
    window_days: dict[str, int] = Field(
        default_factory=lambda: {"Walk-in": 1, "Online": 2, "Lockbox": 1},
        description="T+N per channel: how many days after the payment its money may reach the bank.",
    )
    default_window_days: int = Field(default=2, ge=0, description="T+N for channels not listed.")
    counter_methods: tuple[str, ...] = Field(
        default=("Cash", "Cheque"), description="Payment methods a counter deposits at the bank (per branch, day)."
    )
    teller_branches: dict[str, str] = Field(
        default_factory=dict, description="Teller -> branch; a teller not listed deposits under the channel's name."
    )
    fee_codes: tuple[str, ...] = Field(
        default=("CHRG", "698", "NCHG", "FEES"), description="Bank transaction codes of the bank's own charges."
    )
    fee_keywords: tuple[str, ...] = Field(default=("SERVICE CHARGE", "MAINTENANCE FEE", "BANK FEE"))
    line_grace_days: int = Field(
        default=1, ge=0, description="An unmatched bank line this recent is Expected (its other side may be late)."
    )
    till_variance_threshold: Decimal = Field(default=Decimal("5.00"), ge=0)
    adjustment_approval_limit: Decimal = Field(
        default=Decimal(0), ge=0, description="Adjustments above this wait for a second person (all, by default)."
    )
    currency: str = Field(default="USD", min_length=3, max_length=3)
    timezone: str = "UTC"
    missing_check_seconds: float = Field(
        default=900, gt=0, description="How often expected items past their window are turned into exceptions."
    )
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
