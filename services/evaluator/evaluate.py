"""Evaluate a CLIP model on DataComp's task suite: every task whose data is present, and the aggregate.

``evaluate(model, data_root, tasks=None)`` runs each selected task (all of them by default) whose
data is under ``data_root``; a task without data is reported as ``missing`` and one that breaks as
``failed`` with its error; neither stops the others. The aggregate follows DataComp's
``aggregate_scores.py``: the plain mean of the 38 scored tasks' main metrics, with the ImageNet,
ImageNet dist. shifts, VTAB and Retrieval group means, each saying how many of its tasks it
covers (DataComp's own script insists on all 38; here a partial mean is given and marked so).
winnow's local sets and the fairness sets without a main metric are reported beside it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog

from winnow.services.evaluator.data import ImageTextEncoder, WdsEvalSet, hf_arrow_files
from winnow.services.evaluator.tasks import Task, TaskSuite, load_suite

log = structlog.get_logger("evaluator")

OK, MISSING, FAILED = "ok", "missing", "failed"


@dataclass
class TaskResult:
    key: str
    name: str
    suite: str
    kind: str
    status: str  # ok, missing, failed
    main_metric: str | None
    score: float | None = None  # the main metric's value
    metrics: dict[str, Any] = field(default_factory=dict)
    samples: int = 0
    seconds: float = 0.0
    source: str = ""  # the folder or files read
    error: str = ""  # why missing or failed


@dataclass
class GroupScore:
    key: str
    title: str
    score: float | None
    covered: int
    of: int


@dataclass
class Aggregate:
    average: float | None  # mean of the covered scored tasks' main metrics
    covered: int
    of: int
    groups: list[GroupScore]
    not_covered: list[str]  # names of scored tasks without a score (missing, failed or not selected)
    extra: dict[str, float | None]  # local sets, by name: beside the average, never in it

    @property
    def complete(self) -> bool:
        return self.covered == self.of


@dataclass
class Results:
    model: str
    data_root: str
    tasks: list[TaskResult]
    aggregate: Aggregate
    model_info: dict[str, Any] = field(default_factory=dict)  # e.g. the architecture and checkpoint

    def to_dict(self) -> dict:
        data = asdict(self)
        data["aggregate"]["complete"] = self.aggregate.complete
        return _json_safe(data)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


def datacomp_line(result: TaskResult) -> str:
    """One line of DataComp's ``eval_results.jsonl``: ``key``, ``dataset``, ``metrics`` (with ``main_metric``).

    ``samples`` and ``seconds`` ride along; DataComp's ``aggregate_scores.py`` reads such a file as is.
    """
    return json.dumps(_json_safe({"key": result.key, "dataset": result.name, "metrics": result.metrics,
                                  "samples": result.samples, "seconds": round(result.seconds, 3)}), allow_nan=False)


def read_datacomp_lines(lines: Sequence[str], suite: TaskSuite | None = None) -> dict[str, TaskResult]:
    """Task results from ``eval_results.jsonl`` lines, by task key (lines of unknown tasks are ignored)."""
    suite = suite or load_suite()
    known = {t.key: t for t in suite.tasks}
    out = {}
    for line in lines:
        if not line.strip():
            continue
        row = json.loads(line)
        task = known.get(row.get("key"))
        if task is None:
            continue
        metrics = row.get("metrics") or {}
        out[task.key] = TaskResult(key=task.key, name=task.name, suite=task.suite, kind=task.kind, status=OK,
                                   main_metric=task.main_metric, score=metrics.get("main_metric"), metrics=metrics,
                                   samples=int(row.get("samples") or 0), seconds=float(row.get("seconds") or 0.0),
                                   source="(earlier run)")
    return out


def _json_safe(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return _json_safe(value.item())
    return value


def load_encoder(model, arch: str | None = None, device: str | None = None, batch_size: int = 64) -> ImageTextEncoder:
    """``model`` itself if it embeds images and texts, else an open_clip ``arch`` with the checkpoint ``model``."""
    if hasattr(model, "embed_images") and hasattr(model, "embed_texts"):
        return model
    if not arch:
        raise ValueError(f"to evaluate the checkpoint {model} give its architecture (e.g. arch='ViT-B-32')")
    from winnow.shared.models.clip import OpenClipEncoder

    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return OpenClipEncoder(arch, pretrained=str(model), device=device, batch_size=batch_size)


def locate(task: Task, data_root: str | Path) -> tuple[str, object] | None:
    """Where the task's data is: ``("wds", WdsEvalSet)``, ``("hf", [arrow files])`` or None."""
    eval_set = WdsEvalSet(Path(data_root) / task.wds_dir)
    if task.kind != "association" and eval_set.exists():
        return "wds", eval_set
    if task.hf_dataset:
        files = hf_arrow_files(data_root, task.hf_dataset)
        if files:
            return "hf", files
    return None


def _expected_location(task: Task, data_root: str | Path) -> str:
    where = [] if task.kind == "association" else [str(Path(data_root) / task.wds_dir / "test" / "nshards.txt")]
    if task.hf_dataset:
        where.append(f"{Path(data_root) / 'hf_cache'} ({task.hf_dataset} arrow files)")
    return "no data at " + " or ".join(where)


def run_task(task: Task, encoder: ImageTextEncoder, data_root: str | Path, batch_size: int = 64) -> TaskResult:
    """One task: its metrics with DataComp's ``main_metric`` among them, or the reason it has none."""
    result = TaskResult(key=task.key, name=task.name, suite=task.suite, kind=task.kind, status=MISSING,
                        main_metric=task.main_metric)
    found = locate(task, data_root)
    if found is None:
        result.error = _expected_location(task, data_root)
        return result
    source_kind, source = found
    result.source = str(source.folder) if source_kind == "wds" else str(source[0].parent)
    log.info("evaluating", task=task.key, source=result.source)
    started = time.perf_counter()
    try:
        metrics, result.samples = _dispatch(task, encoder, source_kind, source, batch_size)
    except Exception as exc:  # one broken task must not lose the others' results
        log.exception("task failed", task=task.key)
        result.status, result.error = FAILED, f"{type(exc).__name__}: {exc}"
        result.seconds = time.perf_counter() - started
        return result
    result.seconds = time.perf_counter() - started
    metrics["main_metric"] = metrics.get(task.main_metric) if task.main_metric else None
    result.metrics, result.score, result.status = metrics, metrics["main_metric"], OK
    if task.main_metric and (result.score is None or not math.isfinite(result.score)):
        result.status = FAILED
        result.error = f"no value for the main metric {task.main_metric} (got {result.score})"
    return result


def _dispatch(task: Task, encoder: ImageTextEncoder, source_kind: str, source, batch_size: int) -> tuple[dict, int]:
    if task.kind == "zeroshot_classification":
        from winnow.services.evaluator.zeroshot import evaluate_zeroshot_classification

        return evaluate_zeroshot_classification(encoder, source, batch_size)
    if task.kind == "retrieval":
        from winnow.services.evaluator.retrieval import evaluate_retrieval, hf_retrieval_samples

        samples = source.retrieval_samples() if source_kind == "wds" else hf_retrieval_samples(source)
        return evaluate_retrieval(encoder, samples, batch_size)
    if task.kind == "association":
        from winnow.services.evaluator.association import evaluate_association, hf_association_rows

        return evaluate_association(encoder, hf_association_rows(source))
    if task.kind in ("wilds", "fairness"):
        from winnow.services.evaluator.grouped import evaluate_grouped

        return evaluate_grouped(encoder, source, task.grouping, batch_size)
    raise ValueError(f"no evaluator for task kind {task.kind!r}")


def aggregate(results: Sequence[TaskResult], suite: TaskSuite) -> Aggregate:
    """DataComp's aggregate over whatever of the 38 has a score; how much it covers is part of the answer."""
    scores = {r.key: r.score for r in results if r.status == OK and r.score is not None}
    scored = suite.scored
    covered = [scores[t.key] for t in scored if t.key in scores]
    groups = []
    for group in suite.groups:
        values = [scores[key] for key in group.tasks if key in scores]
        groups.append(GroupScore(key=group.key, title=group.title, score=_mean(values), covered=len(values),
                                 of=len(group.tasks)))
    extra = {r.name: r.score for r in results if r.suite != "datacomp" and r.status == OK}
    return Aggregate(average=_mean(covered), covered=len(covered), of=len(scored), groups=groups,
                     not_covered=[t.name for t in scored if t.key not in scores], extra=extra)


def _mean(values: list[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


def evaluate(model, data_root: str | Path, tasks: Sequence[str] | None = None, *, arch: str | None = None,
             device: str | None = None, batch_size: int = 64, suite: TaskSuite | None = None,
             previous: dict[str, TaskResult] | None = None,
             on_result: Callable[[TaskResult], None] | None = None, model_info: dict | None = None) -> Results:
    """Evaluate ``model`` on the selected tasks (keys, names, or ``datacomp`` / ``local``; default all).

    ``model`` is an encoder (``embed_images``, ``embed_texts``) or a checkpoint path with ``arch``.
    ``previous`` holds results to reuse by task key (only ``ok`` ones are reused), as DataComp's
    ``evaluate.py`` skips tasks already in its results file.
    """
    suite = suite or load_suite()
    selected = suite.select(list(tasks) if tasks is not None else None)
    encoder = load_encoder(model, arch=arch, device=device, batch_size=batch_size)
    results = []
    for task in selected:
        reused = (previous or {}).get(task.key)
        if reused is not None and reused.status == OK:
            result = reused
            log.info("reusing an earlier result", task=task.key)
        else:
            result = run_task(task, encoder, data_root, batch_size=batch_size)
        log.info("task done", task=task.key, status=result.status, score=result.score,
                 seconds=round(result.seconds, 2))
        results.append(result)
        if on_result is not None:
            on_result(result)
    name = getattr(encoder, "name", None) or type(encoder).__name__
    return Results(model=name, data_root=str(data_root), tasks=results, aggregate=aggregate(results, suite),
                   model_info=dict(model_info or {}))


# --- reading back and showing -------------------------------------------------------------------------


def results_from_dict(data: dict) -> Results:
    aggregate_data = dict(data["aggregate"])
    aggregate_data.pop("complete", None)
    aggregate_data["groups"] = [GroupScore(**g) for g in aggregate_data["groups"]]
    return Results(model=data["model"], data_root=data["data_root"], tasks=[TaskResult(**t) for t in data["tasks"]],
                   aggregate=Aggregate(**aggregate_data), model_info=data.get("model_info") or {})


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def results_tables(results: Results):
    """Two rich tables: one row per task, then the aggregate."""
    from rich.table import Table

    suite = load_suite()
    missing = [r.name for r in results.tasks if r.status == MISSING]
    caption = (f"no data for {len(missing)} tasks under {results.data_root}: {', '.join(missing)}"
               if missing else None)
    per_task = Table(title=f"winnow evaluate: {results.model}", caption=caption, caption_justify="left")
    for column, justify in (("task", "left"), ("group", "left"), ("main metric", "left"), ("score", "right"),
                            ("samples", "right"), ("seconds", "right"), ("status", "left")):
        per_task.add_column(column, justify=justify)
    for r in results.tasks:
        if r.status == MISSING:
            continue
        task = suite.get(r.key) if r.key in {t.key for t in suite.tasks} else None
        group = ", ".join(g.title for g in suite.group_of(task)) if task else ""
        group = group or ("local (beside)" if r.suite == "local" else
                          "no main metric" if r.main_metric is None else "")
        status = r.status if r.status == OK else f"{r.status}: {r.error}"
        per_task.add_row(r.name, group, r.main_metric or "-", _fmt(r.score), str(r.samples or "-"),
                         f"{r.seconds:.1f}" if r.status == OK else "-", status,
                         style=None if r.status == OK else "red")
    agg = results.aggregate
    summary = Table(title="aggregate (DataComp)")
    summary.add_column("")
    summary.add_column("score", justify="right")
    summary.add_column("covers", justify="right")
    summary.add_row(f"Average of the {agg.of}", _fmt(agg.average), f"{agg.covered} of {agg.of}",
                    style="bold" if agg.complete else "yellow")
    for group in agg.groups:
        summary.add_row(group.title, _fmt(group.score), f"{group.covered} of {group.of}")
    for name, score in agg.extra.items():
        summary.add_row(f"{name} (beside the mean)", _fmt(score), "")
    return per_task, summary
