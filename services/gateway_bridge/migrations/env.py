from services.gateway_bridge.storage import metadata
from shared.migrations import run_env

run_env(metadata)
