from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class CreditNotesSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CREDIT_NOTES_", extra="ignore", populate_by_name=True)

    service_name: str = "credit_notes"
    http_port: int = Field(default=8103, ge=1, le=65535)
    number_prefix: str = Field(default="CN-", min_length=1, max_length=10, description="Credit-note number prefix.")
    number_start: int = Field(default=46129, ge=1, description="The first credit-note number.")
    number_padding: int = Field(default=5, ge=1, le=12, description="Digits the number is zero-padded to.")
    expiry_check_seconds: float = Field(
        default=300.0, gt=0, description="How often the service looks for credit notes past their expiry date."
    )
    timezone: str = Field(default="UTC", description="The utility's time zone: what 'today' means in list filters.")
