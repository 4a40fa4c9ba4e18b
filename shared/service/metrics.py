"""Prometheus metrics shared by every service (one registry per process)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

from winnow.shared.shards import ShardStats

SAMPLES = Counter("winnow_samples_total", "Samples a stage finished, by status and reason",
                  ["stage", "status", "reason"])
SHARDS = Counter("winnow_shards_total", "Shards a worker finished, by outcome", ["stage", "outcome"])
SHARD_SECONDS = Histogram("winnow_shard_seconds", "Time to process one shard", ["stage"],
                          buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800))
RPCS = Counter("winnow_rpcs_total", "gRPC calls by method and status code", ["method", "code"])


def serve_metrics(port: int):
    """Expose ``/metrics`` on ``port``; returns the HTTP server to shut down, or None when 0."""
    if not port:
        return None
    server, _thread = start_http_server(port)
    return server


def record_shard_stats(stats: ShardStats) -> None:
    """Add one shard's kept count and its not-kept counts per reason to the sample counter."""
    if stats.successes:
        SAMPLES.labels(stats.stage, "kept", "").inc(stats.successes)
    for reason, count in stats.reasons.items():
        SAMPLES.labels(stats.stage, "not_kept", reason).inc(count)
