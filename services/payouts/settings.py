from decimal import Decimal

from pydantic import AliasChoices, BaseModel, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class DebtorAccount(BaseModel):
    """A bank account of the utility that bank payouts are paid from (one pain.001 file per account and run)."""

    account_id: str = Field(min_length=1, max_length=40, examples=["EUR-MAIN"])
    name: str = Field(min_length=1, max_length=70, examples=["Paydesk Water Utility"])
    iban: str = Field(examples=["DE89370400440532013000"])
    bic: str | None = Field(default=None, examples=["COBADEFFXXX"])
    currency: str = Field(default="EUR", min_length=3, max_length=3)


class PayoutsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PAYOUTS_", extra="ignore", populate_by_name=True)
    # Uploads: an invoice file of up to `invoice_max_bytes` (5 MiB) plus its form.
    max_request_body_bytes: int = Field(
        default=6 * 1024 * 1024,
        ge=1024,
        validation_alias=AliasChoices("PAYDESK_MAX_REQUEST_BODY_BYTES", "max_request_body_bytes"),
    )

    service_name: str = "payouts"
    http_port: int = Field(default=8108, ge=1, le=65535)
    stripe_api_key: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("STRIPE_API_KEY", "stripe_api_key")
    )
    stripe_api_base: str = Field(
        default="https://api.stripe.com", validation_alias=AliasChoices("STRIPE_API_BASE", "stripe_api_base")
    )
    manual_approval_limit: Decimal = Field(
        default=Decimal("100.00"),
        ge=0,
        description="A manual earning or adjustment above this amount waits for a second person's approval.",
    )
    max_rate_age_days: int = Field(
        default=7, ge=0, description="How old an exchange rate may be and still be used (weekends, holidays)."
    )
    debtor_accounts: list[DebtorAccount] = Field(
        default_factory=lambda: [
            DebtorAccount(account_id="EUR-MAIN", name="Paydesk Water Utility", iban="DE89370400440532013000")
        ],
        description="JSON list; the first account in a payout's currency pays it.",
    )
    invoice_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024, description="Largest invoice file accepted.")
    import_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="Largest CSV/XLSX import accepted.")
    utility_name: str = Field(default="Paydesk Water Utility", description="The statement's letterhead.")
    timezone: str = Field(default="UTC", description="The utility's time zone: what 'today' and 'this year' mean.")
    schedule_check_seconds: float = Field(
        default=300.0,
        ge=0,
        description="How often the scheduler checks that each schedule's run of the current pay period exists "
        "(0: no timer).",
    )
