from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class PaymentsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore", populate_by_name=True)

    service_name: str = "payments"
    http_port: int = Field(default=8102, ge=1, le=65535)
    commands_max_batch: int = Field(
        default=500,
        ge=1,
        description="Most commands from `payments.commands.v1` posted in one transaction. A batch costs a fixed "
        "handful of statements and round trips whatever its size, so a lockbox file goes faster in bigger ones "
        "(bench/lockbox_consumer.py: 0.79 ms of CPU per command at 200, 0.64 at 500); a bad command still goes "
        "to the DLQ alone, though its batch is then applied one command at a time.",
    )

    # Customers paying online: payments creates the PaymentIntent; gateway_bridge follows it by webhook.
    # Stripe's names, without our prefix, as gateway_bridge reads them.
    stripe_api_key: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("STRIPE_API_KEY", "stripe_api_key")
    )
    stripe_api_base: str = Field(
        default="https://api.stripe.com", validation_alias=AliasChoices("STRIPE_API_BASE", "stripe_api_base")
    )
