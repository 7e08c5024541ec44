"""Consumer lag: per consumer group and partition, the committed offset, the end offset and the difference.

What operators look at first when events seem slow: a lag that grows means the group's consumers fall behind
(or are gone). Read with aiokafka's admin client: `list_consumer_groups` (ListGroups), then for each group
`list_consumer_group_offsets` (OffsetFetch for all partitions: what the group committed), and the partitions'
end and start offsets from a consumer outside any group (ListOffsets). `describe_consumer_groups` is not needed
(Tansu fails it; it would add the members, not the offsets). Used by `paydesk lag` and kpi's `/metrics`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition


@dataclass(frozen=True, slots=True, order=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    #: The next offset the group will read (what it committed); None if it committed nothing here yet.
    committed: int | None
    #: The offset the next record written to the partition will get.
    end: int
    #: The first offset still in the partition (older ones were deleted by retention).
    start: int = 0

    @property
    def lag(self) -> int:
        """Records written and not yet consumed by the group; from the partition's start if it committed nothing."""
        return max(self.end - (self.start if self.committed is None else max(self.committed, self.start)), 0)


async def consumer_lag(
    bootstrap_servers: str,
    *,
    groups: Iterable[str] | None = None,
    group_prefix: str = "",
    subscriptions: Mapping[str, Iterable[str]] | None = None,
) -> list[PartitionLag]:
    """Lag of `groups` (all groups known to the cluster whose id starts with `group_prefix` if None), sorted.

    A group is reported on every partition of every topic it committed an offset on, and of the topics
    `subscriptions` names for it, so a partition it has not reached yet (or a group that has not committed
    anything yet) shows up with `committed` None rather than missing.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="paydesk-lag")
    await admin.start()
    try:
        if groups is None:
            listed = await admin.list_consumer_groups()
            names = sorted({str(g[0]) for g in listed if str(g[0]).startswith(group_prefix)})
        else:
            names = sorted(set(groups))
        committed: dict[str, dict[TopicPartition, int]] = {}
        topics_of: dict[str, set[str]] = {}
        for name in names:
            offsets = await admin.list_consumer_group_offsets(name)
            committed[name] = {tp: meta.offset for tp, meta in offsets.items()}
            topics_of[name] = {tp.topic for tp in offsets} | set((subscriptions or {}).get(name, ()))
        topics = set().union(*topics_of.values()) if topics_of else set()
        partitions_of: dict[str, list[int]] = defaultdict(list)
        for described in await admin.describe_topics(sorted(topics)) if topics else []:
            if not described.get("error_code"):
                partitions_of[described["topic"]] = sorted(p["partition"] for p in described["partitions"])
    finally:
        await admin.close()
    if not topics:
        return []
    every = [TopicPartition(t, p) for t, ps in partitions_of.items() for p in ps]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False, client_id="paydesk-lag")
    await consumer.start()
    try:
        ends = await consumer.end_offsets(every) if every else {}
        starts = await consumer.beginning_offsets(every) if every else {}
    finally:
        await consumer.stop()
    result = []
    for name in names:
        for tp in every:
            if tp.topic not in topics_of[name]:
                continue
            offset = committed[name].get(tp)
            result.append(
                PartitionLag(
                    group=name,
                    topic=tp.topic,
                    partition=tp.partition,
                    committed=offset if offset is not None and offset >= 0 else None,
                    end=ends[tp],
                    start=starts[tp],
                )
            )
    return sorted(result)


def format_table(rows: Iterable[PartitionLag]) -> str:
    """The lag as a plain table, one line per group and partition (what `paydesk lag` prints)."""
    rows = list(rows)
    header = ("group", "topic", "partition", "committed", "end", "lag")
    cells = [
        (r.group, r.topic, str(r.partition), "-" if r.committed is None else str(r.committed), str(r.end), str(r.lag))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    lines = []
    for row in [header, *cells]:
        left = [row[i].ljust(widths[i]) for i in range(2)]
        right = [row[i].rjust(widths[i]) for i in range(2, len(header))]
        lines.append("  ".join(left + right).rstrip())
    return "\n".join(lines)
