"""The gateway_bridge service. Its business capability is not built yet; it starts, migrates and reports health."""

from __future__ import annotations

from services.gateway_bridge.settings import GatewayBridgeSettings
from services.gateway_bridge.storage import plumbing
from shared.service import Service


def create_service(settings: GatewayBridgeSettings | None = None) -> Service:
    settings = settings or GatewayBridgeSettings()
    return Service(settings, plumbing, title="Paydesk gateway_bridge")
