from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class CreditNotesSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CREDIT_NOTES_", extra="ignore", populate_by_name=True)

    service_name: str = "credit_notes"
    http_port: int = Field(default=8103, ge=1, le=65535)
