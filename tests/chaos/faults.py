"""Faults at seeded times: what can go wrong with processes, the broker, the database, the network and the input.

`plan_faults(seed, ...)` is pure (the same seed gives the same schedule); `Injector` carries it out against a
running `ChaosSystem`. A fault that pauses something always resumes it, even if the run is interrupted.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from shared.contracts import CONTENT_TYPE, Topic
from tests.chaos.system import ChaosSystem, Instance
from tests.chaos.workload import Driver, Published

KINDS = (
    "kill_instance",  # SIGKILL; the supervisor restarts it with backoff
    "pause_instance",  # SIGSTOP, then SIGCONT
    "pause_broker",  # SIGSTOP the broker's JVM, then SIGCONT
    "kill_broker",  # SIGKILL the broker and start it on its data
    "wipe_broker",  # SIGKILL the broker and start it empty (new cluster id); the other systems send again
    "cut_connections",  # pg_terminate_backend on every connection
    "restart_postgres",  # pg_ctl restart -m immediate
    "proxy_drop",  # reset every connection through the proxy and refuse new ones for a while
    "proxy_delay",  # hold every chunk through the proxy
    "malformed",  # a malformed or oversized message on every input topic
)
# Every kind by default; `--faults` narrows it down (e.g. to find which kind breaks an invariant).
DEFAULT_KINDS = KINDS
# Every topic some service consumes: what another system (or a buggy producer) can put garbage on.
INPUT_TOPICS = (
    Topic.BILLING_RECEIVABLES,
    Topic.PAYMENTS_COMMANDS,
    Topic.GATEWAY_EVENTS,
    Topic.PAYMENTS_EVENTS,
    Topic.CREDITNOTES_EVENTS,
    Topic.COLLECTIONS_COMMANDS,
    Topic.PAYOUTS_COMMANDS,
    Topic.RECONCILIATION_COMMANDS,
)
VARIANTS = ("not_json", "not_an_envelope", "bad_data", "oversized")
# A handled event type per topic whose data the consumers validate: an empty `data` must be dead-lettered.
HANDLED: dict[str, str] = {
    Topic.BILLING_RECEIVABLES: "bill.issued",
    Topic.PAYMENTS_COMMANDS: "payment.record_requested",
    Topic.PAYMENTS_EVENTS: "payment.posted",
    Topic.GATEWAY_EVENTS: "gateway.payment_status_changed",
}
OVERSIZED_BYTES = 512 * 1024
MALFORMED_HEADER = "x-chaos-malformed"


@dataclass(frozen=True, slots=True)
class Fault:
    at: float  # seconds after the fault window opens
    kind: str
    target: str = ""  # an instance name, for the instance faults
    seconds: float = 0.0  # how long a pause, drop or delay lasts
    number: int = 0

    def describe(self) -> str:
        parts = [self.kind, self.target, f"{self.seconds:.1f}s" if self.seconds else ""]
        return " ".join(p for p in parts if p)


def plan_faults(
    seed: int, *, kinds: tuple[str, ...], seconds: float, per_minute: float, targets: list[str]
) -> list[Fault]:
    """Evenly spread slots with seeded jitter, each a seeded kind; the kinds are cycled through first so a short
    run still sees each of them."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds: {sorted(unknown)}; known: {', '.join(KINDS)}")
    rng = random.Random(f"faults-{seed}")
    count = max(len(kinds), round(per_minute * seconds / 60))
    order = list(kinds)
    rng.shuffle(order)
    faults = []
    slot = seconds / count
    for n in range(count):
        kind = order[n] if n < len(order) else rng.choice(kinds)
        at = n * slot + rng.uniform(0, slot * 0.8)
        length = {
            "pause_instance": rng.uniform(2, 12),
            "pause_broker": rng.uniform(2, 8),
            "proxy_drop": rng.uniform(1, 6),
            "proxy_delay": rng.uniform(5, 15),
        }.get(kind, 0.0)
        target = rng.choice(targets) if kind in ("kill_instance", "pause_instance") else ""
        faults.append(Fault(round(at, 3), kind, target, round(length, 2), n))
    return faults


@dataclass(frozen=True, slots=True)
class Malformed:
    marker: str
    topic: str
    variant: str


def malformed_record(marker: str, topic: str, variant: str) -> Published:
    headers = [("content-type", CONTENT_TYPE.encode()), (MALFORMED_HEADER, marker.encode())]
    if variant == "not_json":
        value = b"\x00\xffnot json at all {"
    elif variant == "not_an_envelope":
        value = json.dumps({"hello": "world", "amount": 12.5}).encode()
    elif variant == "oversized":
        value = json.dumps({"padding": "x" * OVERSIZED_BYTES}).encode()
    else:
        value = json.dumps(
            {
                "specversion": "1.0",
                "id": str(uuid.uuid4()),
                "source": "chaos",
                "type": HANDLED[topic],
                "subject": "WU-00000",
                "time": "2025-04-20T10:00:00Z",
                "datacontenttype": "application/json",
                "data": {"amount": "-5"},
            }
        ).encode()
    return Published(topic, marker.encode(), value, headers)


@dataclass(eq=False)
class Injector:
    system: ChaosSystem
    driver: Driver
    seed: int
    say: Callable[[str], None] = print
    applied: list[tuple[float, Fault, str]] = field(default_factory=list)
    malformed: list[Malformed] = field(default_factory=list)
    _heavy: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def run(self, faults: list[Fault], started: float) -> None:
        await asyncio.gather(*(self._at(started, fault) for fault in faults))

    async def _at(self, started: float, fault: Fault) -> None:
        await asyncio.sleep(max(0.0, started + fault.at - time.monotonic()))
        try:
            note = await self.apply(fault)
        except Exception as exc:  # a fault that could not be injected is reported, never hidden
            note = f"could not inject: {exc!r}"[:300]
        self.applied.append((time.monotonic() - started, fault, note))
        self.say(f"fault {fault.number:>3} t={time.monotonic() - started:6.1f}s {fault.describe()}: {note}")

    async def apply(self, fault: Fault) -> str:
        kind = fault.kind
        if kind == "kill_instance":
            instance = self._instance(fault.target)
            return "killed" if self.system.signal_instance(instance, signal.SIGKILL) else "was not running"
        if kind == "pause_instance":
            instance = self._instance(fault.target)
            return await self._paused_for(fault, lambda sig: self.system.signal_instance(instance, sig))
        if kind == "pause_broker":
            return await self._paused_for(fault, self.system.signal_broker)
        if kind in ("kill_broker", "wipe_broker"):
            wipe = kind == "wipe_broker"
            async with self._heavy:
                await asyncio.to_thread(self.system.restart_broker, wipe=wipe)
            if wipe:
                return f"restarted empty; {await self.driver.resend_journal()}"
            return "restarted on its data"
        if kind == "cut_connections":
            return f"{await self._terminate_backends()} connections cut"
        if kind == "restart_postgres":
            async with self._heavy:
                await asyncio.to_thread(self.system.restart_postgres_immediately)
            return "restarted (immediate)"
        if kind == "proxy_drop":
            assert self.system.proxy is not None
            await self.system.proxy.drop_for(fault.seconds)
            return "connections reset"
        if kind == "proxy_delay":
            assert self.system.proxy is not None
            delay = random.Random(f"delay-{self.seed}-{fault.number}").uniform(50, 400)
            await self.system.proxy.delay_for(fault.seconds, delay)
            return f"{delay:.0f} ms per chunk"
        if kind == "malformed":
            return await self._malformed(fault)
        raise ValueError(f"unknown fault {kind}")

    def _instance(self, name: str) -> Instance:
        return next(i for i in self.system.instances if i.name == name)

    async def _paused_for(self, fault: Fault, send: Callable[[signal.Signals], bool]) -> str:
        if not send(signal.SIGSTOP):
            return "was not running"
        try:
            await asyncio.sleep(fault.seconds)
        finally:
            send(signal.SIGCONT)
        return "paused and resumed"

    async def _terminate_backends(self) -> int:
        connection = await asyncpg.connect(self.system.dsn)
        try:
            return int(
                await connection.fetchval(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = 'paydesk' AND pid <> pg_backend_pid()"
                )
            )
        finally:
            await connection.close()

    async def _malformed(self, fault: Fault) -> str:
        rng = random.Random(f"malformed-{self.seed}-{fault.number}")
        records = []
        for topic in INPUT_TOPICS:
            variants = [v for v in VARIANTS if v != "bad_data" or topic in HANDLED]
            variant = rng.choice(variants)
            marker = f"chaos-malformed-{fault.number}-{topic}"
            self.malformed.append(Malformed(marker, topic, variant))
            records.append(malformed_record(marker, topic, variant))
        failed = await self.driver.publish(records)
        return f"{len(records)} published" + (f", {failed} never acknowledged" if failed else "")
