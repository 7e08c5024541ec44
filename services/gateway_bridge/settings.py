from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class GatewayBridgeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_BRIDGE_", extra="ignore", populate_by_name=True)

    service_name: str = "gateway_bridge"
    http_port: int = Field(default=8101, ge=1, le=65535)
