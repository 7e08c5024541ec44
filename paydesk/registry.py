"""Every service the system runs, in one place: its module, its migrations and its default port.

Adding a service means one line here; `make run`, the CLI, migrations, the test set-up and the generated
documents all read this table.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    name: str
    port: int
    # More than 0: `paydesk run` starts this many `api` processes sharing `port` (SO_REUSEPORT) and one `workers`
    # process (consumers, outbox relay) answering health and metrics on `workers_port`, instead of one process
    # doing everything (`PAYDESK_PROCESS_ROLE`). `<NAME>_API_PROCESSES` and `<NAME>_WORKERS_HTTP_PORT` override.
    api_processes: int = 0
    workers_port: int | None = None

    @property
    def package(self) -> str:
        return f"services.{self.name}"

    @property
    def app_module(self) -> str:
        """The module with `create_service(settings=None)`."""
        return f"{self.package}.app"

    def load(self) -> ModuleType:
        return importlib.import_module(self.app_module)

    @property
    def migrations(self) -> Path:
        module = importlib.import_module(self.package)
        assert module.__file__ is not None
        return Path(module.__file__).resolve().parent / "migrations"


# Start order: the pure consumers first, intake last (so nothing is accepted before its consumers listen).
ENTRIES = [
    ServiceEntry("kpi", 8105),
    ServiceEntry("receipts", 8104),
    ServiceEntry("credit_notes", 8103),
    # One process by default: on two cores the split (PAYMENTS_API_PROCESSES=1) answered tellers slower in the quiet
    # e2e bench (HTTP 55 vs 82 payments/s, POST p99 544 vs 464 ms): the api's rows then wait for the workers' relay
    # poll, and the extra process competes for the cores (README, session 8). Kept for machines with cores to spare.
    ServiceEntry("payments", 8102, api_processes=0, workers_port=8112),
    ServiceEntry("gateway_bridge", 8101),
    ServiceEntry("collections", 8106),
    ServiceEntry("reconciliation", 8107),
    ServiceEntry("payouts", 8108),
    # The web pages: started last, so every API it calls is already up.
    ServiceEntry("console", 8100),
]
REGISTRY = {entry.name: entry for entry in ENTRIES}
# Service name -> module with `create_service(settings=None)`, in the DESIGN's order.
SERVICES = {
    name: REGISTRY[name].app_module
    for name in (
        "gateway_bridge",
        "payments",
        "credit_notes",
        "receipts",
        "kpi",
        "collections",
        "reconciliation",
        "payouts",
        "console",
    )
}
START_ORDER = [entry.name for entry in ENTRIES]
DEFAULT_PORTS = {entry.name: entry.port for entry in ENTRIES}
# Intake: what accepts work from outside (webhooks, the tellers' API, the web pages). `paydesk run` stops these
# first, in this order, so nothing new is accepted while the pure consumers drain and stop.
INTAKE = ("gateway_bridge", "payments", "console")
