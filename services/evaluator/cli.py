"""``winnow evaluate`` and ``winnow eval-data``: DataComp's ``evaluate.py``, and offline evaluation sets.

    winnow evaluate --train_output_dir OUT/NAME --data_dir EVAL [--tasks KEY ...] [--model ARCH]
    winnow eval-data build --out EVAL [--sets fashion_mnist openclipart_retrieval]
    winnow eval-data list --data_dir EVAL
    winnow eval-data images --data_dir EVAL --out IMAGES   (then: winnow dedup build-index --images IMAGES)

``evaluate`` reads the trained model from ``OUT/NAME``: the architecture from ``info.json``
(``model``, ``arch`` or DataComp's ``scale_config.model``) unless ``--model`` gives it, the
checkpoint from ``info.json``'s ``checkpoint`` if that file exists, else the highest
``checkpoints/epoch_N.pt`` (else ``checkpoints/epoch_latest.pt``). It writes DataComp's
``eval_results.jsonl`` (a line per finished DataComp task, appended as it goes, so a rerun skips
those tasks as DataComp's does; DataComp's ``aggregate_scores.py`` reads it),
``eval_results_local.jsonl`` (the same for winnow's local sets), ``eval_summary.json`` (every
task, missing ones included, and the aggregate) and ``eval_info.json`` (which model the results
belong to) into ``--output_dir``
(default: the training output directory), and prints the tables. The data root defaults to
``WINNOW_EVAL_DATA``; ``winnow eval-data build`` writes winnow's local sets into one, and DataComp's
``download_evalsets.py`` fills one with the 38 tasks' sets in the same layout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from rich.console import Console
from rich.table import Table

from services.evaluator.local_sets import FASHION_MNIST_KEY, OPENCLIPART_KEY

ENV_DATA_DIR = "WINNOW_EVAL_DATA"
RESULTS_FILE, SUMMARY_FILE, INFO_FILE = "eval_results.jsonl", "eval_summary.json", "eval_info.json"
LOCAL_RESULTS_FILE = "eval_results_local.jsonl"  # winnow's local sets: kept out of DataComp's file


def add_parser(subparsers) -> None:
    evaluate = subparsers.add_parser(
        "evaluate", help="evaluate a trained CLIP on DataComp's tasks (and winnow's local sets)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    evaluate.add_argument("--train_output_dir", required=True, help="the training run's folder (OUT/NAME)")
    evaluate.add_argument("--output_dir", default=None, help="where results go (default: --train_output_dir)")
    evaluate.add_argument("--data_dir", default=None,
                          help=f"evaluation data root (default: ${ENV_DATA_DIR}); see 'winnow eval-data build'")
    evaluate.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                          help="task keys or names, or 'datacomp' / 'local' (default: every task)")
    evaluate.add_argument("--model", default=None, help="open_clip architecture, if info.json does not name it")
    evaluate.add_argument("--checkpoint", default=None, help="a checkpoint file instead of the run's final one")
    evaluate.add_argument("--batch_size", type=int, default=64)
    evaluate.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    evaluate.add_argument("--overwrite", action="store_true", help="evaluate every task again, ignore earlier results")
    evaluate.set_defaults(func=evaluate_command)

    eval_data = subparsers.add_parser("eval-data", help="offline evaluation sets in DataComp's layout")
    commands = eval_data.add_subparsers(dest="eval_data_command", required=True)
    build = commands.add_parser("build", help="write winnow's local evaluation sets (real images, no internet)")
    build.add_argument("--out", required=True, help="evaluation data root to write into")
    build.add_argument("--sets", nargs="+", default=[FASHION_MNIST_KEY, OPENCLIPART_KEY],
                       choices=[FASHION_MNIST_KEY, OPENCLIPART_KEY])
    build.add_argument("--fashion_mnist_size", type=int, default=1000, help="images (10 classes, balanced)")
    build.add_argument("--retrieval_size", type=int, default=500, help="clip-art images (at most ~520 qualify)")
    build.add_argument("--samples_per_shard", type=int, default=500)
    build.set_defaults(func=build_command)
    images = commands.add_parser("images", help="unpack the evaluation images into a folder "
                                 "(for 'winnow dedup build-index', which removes their copies from a pool)")
    images.add_argument("--data_dir", default=None, help=f"evaluation data root (default: ${ENV_DATA_DIR})")
    images.add_argument("--out", required=True, help="folder to write {set}/{key}.{ext} into")
    images.add_argument("--tasks", nargs="+", default=None, metavar="TASK", help="default: every task with data")
    images.set_defaults(func=images_command)
    listing = commands.add_parser("list", help="every task and whether its data is under a data root")
    listing.add_argument("--data_dir", default=None, help=f"evaluation data root (default: ${ENV_DATA_DIR})")
    listing.set_defaults(func=list_command)


# --- the trained model --------------------------------------------------------------------------------


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


def _data_dir(value: str | None) -> Path:
    value = value or os.environ.get(ENV_DATA_DIR)
    if not value:
        raise ValueError(f"no evaluation data: give --data_dir or set {ENV_DATA_DIR} "
                         f"('winnow eval-data build --out DIR' writes the local sets)")
    return Path(value)


def evaluate_command(args: argparse.Namespace) -> int:
    from services.evaluator.evaluate import results_tables

    console = Console()
    results, paths = run_evaluation(args, console)
    for table in results_tables(results):
        console.print(table)
    console.print("results: " + ", ".join(str(p) for p in paths if p.exists()))
    return 1 if any(r.status == "failed" for r in results.tasks) else 0


def run_evaluation(args: argparse.Namespace, console: Console):
    """Evaluate a run's checkpoint, resuming from its earlier results; ``(Results, result files)``."""
    from services.evaluator.evaluate import datacomp_line, evaluate, read_datacomp_lines

    data_dir = _data_dir(args.data_dir)
    arch, checkpoint = resolve_model(args.train_output_dir, args.model, args.checkpoint)
    output_dir = Path(args.output_dir or args.train_output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    info = _fingerprint(arch, checkpoint)
    results_path, local_path = output_dir / RESULTS_FILE, output_dir / LOCAL_RESULTS_FILE
    info_path = output_dir / INFO_FILE
    previous = {}
    if args.overwrite:
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
    console.print(f"evaluating {arch} {checkpoint} on {data_dir}"
                  + (f" ({len(previous)} tasks done before)" if previous else ""))

    def record(result) -> None:
        if result.status == "ok" and result.key not in previous:
            with open(results_path if result.suite == "datacomp" else local_path, "a", encoding="utf-8") as handle:
                handle.write(datacomp_line(result) + "\n")
        if result.status == "ok":
            score = "no main metric" if result.score is None else f"{result.main_metric} {result.score:.4f}"
            when = "earlier run" if result.key in previous else f"{result.seconds:.1f}s"
            console.print(f"  {result.name}: {score} ({result.samples} samples, {when})")
        elif result.status == "failed":
            console.print(f"  [red]{result.name}: failed: {result.error}")

    results = evaluate(checkpoint, data_dir, args.tasks, arch=arch, device=args.device, batch_size=args.batch_size,
                       previous=previous, on_result=record, model_info=info)
    summary_path = output_dir / SUMMARY_FILE
    partial = summary_path.with_suffix(".json.partial")
    partial.write_text(results.to_json() + "\n", encoding="utf-8")
    partial.replace(summary_path)
    return results, (results_path, local_path, summary_path)


# --- evaluation data ----------------------------------------------------------------------------------


def build_command(args: argparse.Namespace) -> int:
    from services.evaluator.local_sets import build_local_sets

    built = build_local_sets(args.out, fashion_mnist_size=args.fashion_mnist_size, retrieval_size=args.retrieval_size,
                             samples_per_shard=args.samples_per_shard, sets=args.sets)
    console = Console()
    for item in built:
        console.print(f"{item.key}: {item.samples} samples in {item.shards} shards -> {item.folder}")
    return 0


def images_command(args: argparse.Namespace) -> int:
    from services.evaluator.data import export_images
    from services.evaluator.tasks import load_suite

    counts = export_images(_data_dir(args.data_dir), args.out, [t.wds_dir for t in load_suite().select(args.tasks)])
    if not counts:
        raise ValueError(f"no webdataset evaluation sets under {_data_dir(args.data_dir)}")
    console = Console()
    for folder, count in counts.items():
        console.print(f"{folder}: {count} images")
    console.print(f"{sum(counts.values())} evaluation images -> {args.out}")
    return 0


def list_command(args: argparse.Namespace) -> int:
    from services.evaluator.evaluate import locate
    from services.evaluator.tasks import load_suite

    data_dir = _data_dir(args.data_dir)
    suite = load_suite()
    table = Table(title=f"evaluation tasks under {data_dir}")
    for column in ("task", "key", "kind", "main metric", "group", "data"):
        table.add_column(column)
    present = 0
    for task in suite.tasks:
        found = locate(task, data_dir)
        present += found is not None
        groups = ", ".join(g.title for g in suite.group_of(task)) or ("beside the mean" if not task.scored else "")
        table.add_row(task.name, task.key, task.kind, task.main_metric or "-", groups,
                      found[0] if found else "missing", style=None if found else "dim")
    console = Console()
    console.print(table)
    console.print(f"{present} of {len(suite.tasks)} tasks have data "
                  f"({sum(locate(t, data_dir) is not None for t in suite.scored)} of {len(suite.scored)} scored)")
    return 0
