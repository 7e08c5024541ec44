"""The `paydesk` command: run the whole system, one service, migrations, topics, consumer lag, sample data, tokens."""

from __future__ import annotations

import asyncio
import importlib
import os
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
    account: Annotated[str | None, typer.Option(help="For --role customer: the one account it may read.")] = None,
    payee_id: Annotated[str | None, typer.Option(help="For --role payee: the one payee the token may read.")] = None,
) -> None:
    """Mint a development bearer token."""
    from datetime import timedelta

    secret = ServiceSettings().jwt_secret.get_secret_value()
    try:
        token = mint_token(
            secret, user=user, roles=[role], ttl=timedelta(hours=hours), account_number=account, payee_id=payee_id
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--account") from exc
    typer.echo(token)


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
    """Start everything: Postgres and Kafka (embedded unless given by URL), topics, migrations, every service."""
    from paydesk.launcher import run_system

    # A local run may use the development JWT secret; a deployment sets PAYDESK_JWT_SECRET and leaves this unset.
    os.environ.setdefault("PAYDESK_DEVELOPMENT", "true")
    run_system(data_dir=data_dir, sample_data=sample_data)


# --- on call: traces and dead letters (logic in paydesk/oncall.py) ---

dlq_app = typer.Typer(help="Read and replay dead letters (`<topic>.dlq`).", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


@app.command("trace")
def trace_command(
    trace_id: Annotated[str | None, typer.Argument(help="A trace id (32 hex digits, e.g. from X-Trace-Id).")] = None,
    payment: Annotated[str | None, typer.Option(help="Find the traces of a payment id or receipt number.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also print every span's attributes.")] = False,
) -> None:
    """Print a trace's span tree (services, timings, errors) from the spans stored in Postgres."""
    from paydesk import oncall

    if (trace_id is None) == (payment is None):
        raise typer.BadParameter("give a trace id or --payment, not both")
    url = ServiceSettings().database_url
    trace_ids = [trace_id] if trace_id else oncall.find_traces(url, payment or "")
    if not trace_ids:
        typer.echo(f"no stored trace mentions {payment!r}")
        raise typer.Exit(1)
    for index, one in enumerate(trace_ids):
        if index:
            typer.echo("")
        typer.echo("\n".join(oncall.render_trace(one, oncall.load_trace(url, one), verbose=verbose)))


@dlq_app.command("list")
def dlq_list(
    topic: Annotated[str | None, typer.Argument(help="One topic (or its .dlq); default every DLQ.")] = None,
) -> None:
    """Every dead letter: id (topic:partition:offset), time, event, consumer and reason."""
    from paydesk import oncall

    bootstrap = ServiceSettings().kafka_bootstrap_servers

    async def read() -> list[oncall.DeadLetter]:
        topics = [oncall.dlq_topic(topic)] if topic else await oncall.dlq_topics(bootstrap)
        return [record for name in topics for record in await oncall.read_dead_letters(bootstrap, name)]

    records = asyncio.run(read())
    for record in records:
        typer.echo(oncall.list_line(record))
    typer.echo(f"{len(records)} dead letters")


@dlq_app.command("show")
def dlq_show(
    dead_letter: Annotated[str, typer.Argument(help="<topic>:<partition>:<offset>, as `dlq list` prints.")],
) -> None:
    """One dead letter: headers, reason and body, card-shaped numbers masked."""
    from paydesk import oncall

    topic, partition, offset = _dead_letter_id(dead_letter)
    bootstrap = ServiceSettings().kafka_bootstrap_servers
    records = asyncio.run(oncall.read_dead_letters(bootstrap, topic, partition=partition, offset=offset))
    if not records:
        typer.echo(f"no dead letter {dead_letter}")
        raise typer.Exit(1)
    typer.echo("\n".join(oncall.show_lines(records[0])))


@dlq_app.command("replay")
def dlq_replay(
    dead_letter: Annotated[str | None, typer.Argument(help="<topic>:<partition>:<offset> of one dead letter.")] = None,
    topic: Annotated[str | None, typer.Option(help="Replay every dead letter of this topic (or its .dlq).")] = None,
) -> None:
    """Re-publish dead letters to their original topic after a fix; the consumers' inboxes make repeats harmless."""
    from paydesk import oncall

    if (dead_letter is None) == (topic is None):
        raise typer.BadParameter("give one dead letter id or --topic, not both")
    bootstrap = ServiceSettings().kafka_bootstrap_servers

    async def replay() -> int:
        if topic is not None:
            records = await oncall.read_dead_letters(bootstrap, oncall.dlq_topic(topic))
        else:
            name, partition, offset = _dead_letter_id(dead_letter or "")
            records = await oncall.read_dead_letters(bootstrap, name, partition=partition, offset=offset)
            if not records:
                raise typer.BadParameter(f"no dead letter {dead_letter}")
        return await oncall.replay(bootstrap, records)

    typer.echo(f"replayed {asyncio.run(replay())} dead letters")


def _dead_letter_id(value: str) -> tuple[str, int, int]:
    from paydesk import oncall

    try:
        return oncall.parse_id(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


@app.command("check-collections")
def check_collections(
    at: Annotated[str | None, typer.Option(help="Run as of this ISO date-time (default: now).")] = None,
) -> None:
    """Run one collections compliance pass now (the collections service also runs one on a schedule)."""
    from datetime import datetime

    module = importlib.import_module(SERVICES["collections"])
    moment = datetime.fromisoformat(at) if at else None
    if moment is not None and moment.tzinfo is None:
        raise typer.BadParameter("give a time zone, e.g. 2025-05-01T09:00:00+00:00")
    result = asyncio.run(module.check_once(moment))
    typer.echo(
        f"missed {result.missed} installments, broke {result.broken} arrangements, "
        f"{result.promises_broken} promises; refreshed {result.accounts_refreshed} accounts"
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
