"""A readable per-stage, per-reason summary of a job, for the command line."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.table import Table

from winnow.shared.jobs import StageTotals


def print_stage_summary(console: Console, totals: Iterable[StageTotals]) -> None:
    table = Table(title="winnow: what each stage kept, and why the rest went")
    table.add_column("stage")
    table.add_column("shards", justify="right")
    table.add_column("in", justify="right")
    table.add_column("kept", justify="right")
    table.add_column("not kept, by reason")
    for stage in totals:
        reasons = ", ".join(f"{r}: {n}" for r, n in stage.reasons.most_common()) or "-"
        table.add_row(stage.stage, str(stage.shards_done), str(stage.samples), str(stage.kept), reasons)
    console.print(table)
