"""The `paydesk` command: run the whole system, one service, migrations, topics, consumer lag, sample data, tokens."""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from paydesk.registry import SERVICES
from shared.auth import Role, mint_token
from shared.settings import ServiceSettings

if TYPE_CHECKING:
    from shared.service import Service

app = typer.Typer(help="Paydesk: payments management for utilities.", no_args_is_help=True)


def _service_names(name: str) -> list[str]:
    if name == "all":
        return list(SERVICES)
    if name not in SERVICES:
        raise typer.BadParameter(f"unknown service {name!r}; one of: {', '.join(SERVICES)}")
    return [name]


@app.command()
def service(name: Annotated[str, typer.Argument(help="Which service to run.")]) -> None:
    """Run one service as a process (HTTP, consumers and outbox relay)."""
    from shared.service import run_http

    _service_names(name)
    module = importlib.import_module(SERVICES[name])
    created = module.create_service()
    run_http(lambda: created, created.settings)


@app.command()
def migrate(name: Annotated[str, typer.Argument(help="A service, or `all`.")] = "all") -> None:
    """Bring each service's schema to the newest migration."""
    from paydesk.migrations import upgrade

    url = ServiceSettings().database_url
    for service_name in _service_names(name):
        upgrade(service_name, url)
        typer.echo(f"migrated {service_name}")


@app.command()
def topics() -> None:
    """Create every topic of the contracts, and its DLQ twin, with the configured partition count."""
    from shared.messaging import provision_topics

    settings = ServiceSettings()
    created = asyncio.run(
        provision_topics(
            settings.kafka_bootstrap_servers,
            partitions=settings.kafka_partitions,
            replication_factor=settings.kafka_replication_factor,
        )
    )
    typer.echo(f"created {len(created)} topics" + (f": {', '.join(created)}" if created else ""))


@app.command()
def lag(
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="Only this consumer group (repeatable).")
    ] = None,
    prefix: Annotated[str, typer.Option(help="Only groups whose id starts with this.")] = "",
) -> None:
    """Consumer lag per group and partition: the committed offset, the end offset and the difference."""
    from shared.consumer_lag import consumer_lag, format_table

    bootstrap = ServiceSettings().kafka_bootstrap_servers
    try:
        rows = asyncio.run(consumer_lag(bootstrap, groups=group, group_prefix=prefix))
    except Exception as exc:  # one line for the operator, not a traceback (Tansu, for one, cannot answer)
        typer.echo(f"could not read consumer lag from {bootstrap}: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(format_table(rows) if rows else "no consumer group has committed an offset")


@app.command()
def seed(
    accounts: Annotated[int, typer.Option(help="Also generate this many realistic accounts.")] = 0,
) -> None:
    """Publish the sample consumer (and optionally many generated ones) as billing's events."""
    from paydesk.launcher import publish_reference_data

    count = asyncio.run(publish_reference_data(ServiceSettings().kafka_bootstrap_servers, accounts))
    typer.echo(f"published {count} billing events")


def build_for_docs(name: str) -> Service:
    """A service built with documentation-stable settings (no connection is made)."""
    module = importlib.import_module(SERVICES[name])
    settings_class = type(module.create_service().settings)
    created: Service = module.create_service(settings_class(kafka_bootstrap_servers="localhost:9092"))
    return created


@app.command()
def asyncapi(
    out: Annotated[Path, typer.Option(help="Folder for one AsyncAPI YAML per service.")] = Path("docs/asyncapi"),
) -> None:
    """Write each service's AsyncAPI document, generated from the code."""
    out.mkdir(parents=True, exist_ok=True)
    for name in SERVICES:
        (out / f"{name}.yaml").write_text(build_for_docs(name).asyncapi_yaml())
        typer.echo(f"wrote {out / (name + '.yaml')}")


@app.command("expire-credit-notes")
def expire_credit_notes() -> None:
    """Run one credit-note expiry pass now (the credit_notes service also runs one on a schedule)."""
    module = importlib.import_module(SERVICES["credit_notes"])
    count = asyncio.run(module.expire_once())
    typer.echo(f"expired {count} credit notes")


@app.command()
def token(
    role: Annotated[Role, typer.Option(help="Role carried by the token.")],
    user: Annotated[str, typer.Option(help="Display name of the staff member.")],
    hours: Annotated[int, typer.Option(help="Validity in hours.")] = 8,
) -> None:
    """Mint a development bearer token."""
    from datetime import timedelta

    secret = ServiceSettings().jwt_secret.get_secret_value()
    typer.echo(mint_token(secret, user=user, roles=[role], ttl=timedelta(hours=hours)))


@app.command("kpi-rebuild")
def kpi_rebuild() -> None:
    """Recompute every KPI aggregate from the topics, from offset 0 (a running kpi service waits, then goes on)."""
    from services.kpi.rebuild import rebuild
    from services.kpi.settings import KpiSettings

    outcome = asyncio.run(rebuild(KpiSettings()))
    typer.echo("rebuilt kpi aggregates: " + ", ".join(f"{k} {v}" for k, v in sorted(outcome.items())))


@app.command()
def run(
    data_dir: Annotated[str, typer.Option(help="Where the embedded Postgres keeps its data.")] = ".paydesk",
    sample_data: Annotated[bool, typer.Option(help="Publish the seed's sample data at start.")] = True,
) -> None:
    """Start everything: Postgres and Kafka (embedded unless given by URL), topics, migrations, five services."""
    from paydesk.launcher import run_system

    run_system(data_dir=data_dir, sample_data=sample_data)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
