from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class ReceiptsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RECEIPTS_", extra="ignore", populate_by_name=True)

    service_name: str = "receipts"
    http_port: int = Field(default=8104, ge=1, le=65535)
