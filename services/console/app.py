"""The console service: one web application for the four staff roles and for customers.

It keeps no business data: the pages call payments, credit_notes, receipts and kpi directly with the user's
token. It owns sign-in (a development user list; an OIDC provider in production) and nothing else.
"""

from __future__ import annotations

from services.console import api
from services.console.settings import ConsoleSettings
from services.console.storage import plumbing
from shared.service import Service


def create_service(settings: ConsoleSettings | None = None) -> Service:
    settings = settings or ConsoleSettings()
    service = Service(settings, plumbing, title="Paydesk console")
    service.include(api.router(service.sessions, settings))
    return service
