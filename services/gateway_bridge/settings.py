from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class GatewayBridgeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_BRIDGE_", extra="ignore", populate_by_name=True)

    service_name: str = "gateway_bridge"
    http_port: int = Field(default=8101, ge=1, le=65535)

    # Stripe's names, without our prefix, as DESIGN.md lists them.
    stripe_webhook_secret: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices("STRIPE_WEBHOOK_SECRET", "stripe_webhook_secret"),
        description="Endpoint signing secrets (whsec_...), comma-separated while one is being rotated; "
        "empty rejects every webhook.",
    )
    stripe_api_key: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("STRIPE_API_KEY", "stripe_api_key")
    )
    stripe_api_base: str = Field(
        default="https://api.stripe.com", validation_alias=AliasChoices("STRIPE_API_BASE", "stripe_api_base")
    )
    webhook_tolerance_seconds: int = Field(default=300, ge=1, description="Oldest signature timestamp accepted.")
    settlement_poll_seconds: float = Field(default=1.0, gt=0, description="How often payout jobs are looked for.")
    settlement_retry_seconds: float = Field(
        default=30.0, gt=0, description="Wait before a payout whose Stripe look-up failed is tried again."
    )
    settlement_max_attempts: int = Field(
        default=20, ge=1, description="Look-ups of one payout before it goes to the DLQ with the last error."
    )

    def webhook_secrets(self) -> list[str]:
        return [s.strip() for s in self.stripe_webhook_secret.get_secret_value().split(",") if s.strip()]
