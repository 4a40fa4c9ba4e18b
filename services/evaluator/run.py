"""Evaluating a training run: which model and checkpoint, where results go, resuming a partial run.

The work behind ``winnow evaluate`` and the evaluator service, with typed parameters; the CLI only
parses and prints. The layout it reads and writes is described in :mod:`winnow.services.evaluator.cli`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

ENV_DATA_DIR = "WINNOW_EVAL_DATA"
RESULTS_FILE, SUMMARY_FILE, INFO_FILE = "eval_results.jsonl", "eval_summary.json", "eval_info.json"
LOCAL_RESULTS_FILE = "eval_results_local.jsonl"  # winnow's local sets: kept out of DataComp's file

def find_checkpoint(train_output_dir: str | Path) -> Path:
    """The final checkpoint of an open_clip / DataComp run: the highest ``epoch_N.pt``, else ``epoch_latest.pt``."""
    folder = Path(train_output_dir) / "checkpoints"
    numbered = []
    for path in folder.glob("epoch_*.pt"):
        match = re.fullmatch(r"epoch_(\d+)\.pt", path.name)
        if match:
            numbered.append((int(match.group(1)), path))
    if numbered:
        return max(numbered)[1]
    if (folder / "epoch_latest.pt").is_file():
        return folder / "epoch_latest.pt"
    raise FileNotFoundError(f"no checkpoint in {folder} (epoch_N.pt or epoch_latest.pt)")


def read_train_info(train_output_dir: str | Path) -> dict:
    path = Path(train_output_dir) / "info.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from exc


def resolve_model(train_output_dir: str | Path, model: str | None = None,
                  checkpoint: str | None = None) -> tuple[str, Path]:
    """``(architecture, checkpoint)`` of a training run, as described in the module docstring."""
    info = read_train_info(train_output_dir)
    arch = model or info.get("model") or info.get("arch") or (info.get("scale_config") or {}).get("model")
    if not arch:
        raise ValueError(f"no architecture: {Path(train_output_dir) / 'info.json'} names none; give --model")
    if checkpoint:
        chosen = Path(checkpoint)
    else:
        named = info.get("checkpoint")
        candidates = [Path(named), Path(train_output_dir) / named] if named else []
        chosen = next((path for path in candidates if path.is_file()), None) or find_checkpoint(train_output_dir)
    if not chosen.is_file():
        raise FileNotFoundError(f"checkpoint {chosen} does not exist")
    return arch, chosen


def _fingerprint(arch: str, checkpoint: Path) -> dict:
    stat = checkpoint.stat()
    return {"arch": arch, "checkpoint": str(checkpoint.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def evaluation_data_dir(value: str | Path | None) -> Path:
    """The evaluation data root: ``value``, else ``$WINNOW_EVAL_DATA``; an error naming both when neither is set."""
    value = value or os.environ.get(ENV_DATA_DIR)
    if not value:
        raise ValueError(f"no evaluation data: give --data_dir or set {ENV_DATA_DIR} "
                         f"('winnow eval-data build --out DIR' writes the local sets)")
    return Path(value)


def evaluate_run(train_output_dir: str | Path, *, data_dir: str | Path | None = None,
                 output_dir: str | Path | None = None, tasks: list[str] | None = None, model: str | None = None,
                 checkpoint: str | None = None, batch_size: int = 64, device: str | None = None,
                 overwrite: bool = False, say: Callable[[str], None] = lambda line: None):
    """Evaluate a training run's checkpoint, resuming from its earlier results; ``(Results, result files)``.

    ``data_dir`` defaults to ``$WINNOW_EVAL_DATA``; results go to ``output_dir`` (default: the run's
    folder); ``say`` receives a line per task as it finishes.
    """
    from winnow.services.evaluator.evaluate import datacomp_line, evaluate, read_datacomp_lines

    data_dir = evaluation_data_dir(data_dir)
    arch, chosen = resolve_model(train_output_dir, model, checkpoint)
    output_dir = Path(output_dir or train_output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    info = _fingerprint(arch, chosen)
    results_path, local_path = output_dir / RESULTS_FILE, output_dir / LOCAL_RESULTS_FILE
    info_path = output_dir / INFO_FILE
    previous = {}
    if overwrite:
        results_path.unlink(missing_ok=True)
        local_path.unlink(missing_ok=True)
    elif info_path.is_file() and (results_path.is_file() or local_path.is_file()):
        if json.loads(info_path.read_text()) != info:
            raise ValueError(f"{output_dir} holds results of another model ({info_path}); "
                             f"use --overwrite or another --output_dir")
        for path in (results_path, local_path):
            if path.is_file():
                previous.update(read_datacomp_lines(path.read_text(encoding="utf-8").splitlines()))
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    say(f"evaluating {arch} {chosen} on {data_dir}"
                  + (f" ({len(previous)} tasks done before)" if previous else ""))

    def record(result) -> None:
        if result.status == "ok" and result.key not in previous:
            with open(results_path if result.suite == "datacomp" else local_path, "a", encoding="utf-8") as handle:
                handle.write(datacomp_line(result) + "\n")
        if result.status == "ok":
            score = "no main metric" if result.score is None else f"{result.main_metric} {result.score:.4f}"
            when = "earlier run" if result.key in previous else f"{result.seconds:.1f}s"
            say(f"  {result.name}: {score} ({result.samples} samples, {when})")
        elif result.status == "failed":
            say(f"  [red]{result.name}: failed: {result.error}")

    results = evaluate(chosen, data_dir, tasks, arch=arch, device=device, batch_size=batch_size,
                       previous=previous, on_result=record, model_info=info)
    summary_path = output_dir / SUMMARY_FILE
    partial = summary_path.with_suffix(".json.partial")
    partial.write_text(results.to_json() + "\n", encoding="utf-8")
    partial.replace(summary_path)
    return results, (results_path, local_path, summary_path)
