"""``winnow status``: each service's health and each stage's progress, read live from the stack.

Nothing is taken from the stack's own bookkeeping but the addresses: health comes from each
replica's ``grpc.health.v1`` service, partitions and lag from Kafka (the consumer group's members
and committed offsets against the topic's end offsets), dead letters from Kafka too (the messages
on the stage's dead-letter topic, which no restart resets), shards and samples from each replica's
Prometheus ``/metrics`` (counters since that replica started).
"""

from __future__ import annotations

import urllib.request
from collections import Counter
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from rich.table import Table

from winnow.ops import topology
from winnow.ops.devstack.processes import health_status


@dataclass
class ReplicaStatus:
    name: str
    pid: int | None
    health: str
    partitions: list[int] = field(default_factory=list)
    shards: Counter = field(default_factory=Counter)  # outcome -> count
    kept: int = 0
    not_kept: Counter = field(default_factory=Counter)  # reason -> count


@dataclass
class ServiceStatus:
    name: str
    input_topic: str
    replicas: list[ReplicaStatus]
    lag: int | None = None  # messages on the input topic not yet committed by the group
    dead_letters: int | None = None  # messages on the input topic's dead-letter topic, ever
    error: str = ""

    @property
    def shards(self) -> Counter:
        return sum((r.shards for r in self.replicas), Counter())

    @property
    def kept(self) -> int:
        return sum(r.kept for r in self.replicas)

    @property
    def not_kept(self) -> Counter:
        return sum((r.not_kept for r in self.replicas), Counter())


def scrape(url: str, timeout: float = 2.0) -> tuple[Counter, int, Counter]:
    """(shards by outcome, samples kept, samples not kept by reason) from one replica's metrics."""
    shards, kept, not_kept = Counter(), 0, Counter()
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "winnow_shards_total":
                shards[sample.labels["outcome"]] += int(sample.value)
            elif sample.name == "winnow_samples_total":
                if sample.labels["status"] == "kept":
                    kept += int(sample.value)
                else:
                    not_kept[sample.labels["reason"]] += int(sample.value)
    return shards, kept, not_kept


def consumer_groups(bootstrap: str, groups: list[str]) -> tuple[dict[str, dict[int, list[int]]], dict[str, int],
                                                                 dict[str, int]]:
    """Per group: {member pid: partitions} from the group's assignment, the group's total lag, and
    the number of messages on its dead-letter topic."""
    from kafka import TopicPartition
    from kafka.admin import KafkaAdminClient, OffsetSpec

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="winnow-status", request_timeout_ms=5000)
    try:
        described = admin.describe_groups(groups)
        assignments: dict[str, dict[int, list[int]]] = {}
        for group in groups:
            members = {}
            for member in described.get(group, {}).get("members", []):
                pid = _pid_of(member.get("client_id", ""))
                assigned = (member.get("member_assignment") or {}).get("assigned_partitions", [])
                members[pid] = sorted(p for topic in assigned for p in topic["partitions"])
            assignments[group] = members
        lags, dead_letters = {}, {}
        existing = set(admin.list_topics())
        for group in groups:
            svc = topology.service(group)
            partitions = [TopicPartition(svc.input_topic, p) for p in range(topology.TOPIC_PARTITIONS)]
            ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in partitions})
            committed = admin.list_group_offsets({group: partitions}).get(group, {})
            lags[group] = sum(max(ends[tp].offset - (committed[tp].offset if tp in committed and
                                                     committed[tp].offset >= 0 else 0), 0) for tp in partitions)
            dlq = f"{svc.input_topic}.dlq"
            if dlq in existing:
                dlq_partitions = [TopicPartition(dlq, p) for p in range(topology.TOPIC_PARTITIONS)]
                starts = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in dlq_partitions})
                ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in dlq_partitions})
                dead_letters[group] = sum(ends[tp].offset - starts[tp].offset for tp in dlq_partitions)
            else:
                dead_letters[group] = 0
        return assignments, lags, dead_letters
    finally:
        admin.close()


def _pid_of(client_id: str) -> int | None:
    tail = client_id.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def collect(state: dict) -> list[ServiceStatus]:
    """The live status of every service of a running stack (``stack.json``'s contents)."""
    statuses = []
    for name, replicas in state["services"].items():
        svc = topology.service(name)
        status = ServiceStatus(name, svc.input_topic, [])
        for replica in replicas:
            entry = ReplicaStatus(f"{name}-{replica['replica']}", replica["pid"], health_status(replica["grpc"]))
            try:
                entry.shards, entry.kept, entry.not_kept = scrape(replica["metrics"])
            except OSError:
                pass  # down: its health already says so
            status.replicas.append(entry)
        statuses.append(status)
    try:
        assignments, lags, dead_letters = consumer_groups(state["kafka_bootstrap"], [s.name for s in statuses])
    except Exception as exc:  # noqa: BLE001 - a status page shows what it can
        for status in statuses:
            status.error = f"kafka: {exc}"
        return statuses
    for status in statuses:
        status.lag = lags.get(status.name)
        status.dead_letters = dead_letters.get(status.name)
        members = assignments.get(status.name, {})
        for replica in status.replicas:
            replica.partitions = members.get(replica.pid, [])
    return statuses


def render(statuses: list[ServiceStatus]) -> Table:
    """One row per replica, with the stage's lag and totals on its first row."""
    table = Table(title="winnow stack", expand=False)
    for column in ("service", "replica", "health", "partitions", "lag", "shards done", "dead-lettered", "kept",
                   "dropped (by reason)"):
        table.add_column(column, justify="right" if column in ("lag", "shards done", "dead-lettered", "kept") else "left")
    for status in statuses:
        for index, replica in enumerate(status.replicas or [ReplicaStatus("-", None, "no replicas")]):
            first = index == 0
            dropped = ", ".join(f"{reason or 'other'} {count}" for reason, count in replica.not_kept.most_common())
            colour = "green" if replica.health == "SERVING" else "red"
            table.add_row(status.name if first else "", replica.name, f"[{colour}]{replica.health}",
                          ",".join(map(str, replica.partitions)) or "-",
                          ("?" if status.lag is None else str(status.lag)) if first else "",
                          str(replica.shards["done"]),
                          ("?" if status.dead_letters is None else str(status.dead_letters)) if first else "",
                          str(replica.kept), dropped or "-")
        if status.error:
            table.add_row("", "", f"[red]{status.error}", "", "", "", "", "", "")
    return table
