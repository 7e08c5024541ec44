"""Runs each service's Alembic history; the registry says where each one lives."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from paydesk.registry import REGISTRY


def alembic_config(service: str, database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(REGISTRY[service].migrations))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(service: str, database_url: str) -> None:
    """Bring the service's schema to the newest revision (blocking; run it outside an event loop)."""
    command.upgrade(alembic_config(service, database_url), "head")
