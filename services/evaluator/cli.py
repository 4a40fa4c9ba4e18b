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

from rich.console import Console
from rich.table import Table

from winnow.services.evaluator.local_sets import FASHION_MNIST_KEY, OPENCLIPART_KEY
from winnow.services.evaluator.run import ENV_DATA_DIR, evaluate_run, evaluation_data_dir


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


def evaluate_command(args: argparse.Namespace) -> int:
    from winnow.services.evaluator.evaluate import results_tables

    console = Console()
    results, paths = evaluate_run(args.train_output_dir, data_dir=args.data_dir, output_dir=args.output_dir,
                                  tasks=args.tasks, model=args.model, checkpoint=args.checkpoint,
                                  batch_size=args.batch_size, device=args.device, overwrite=args.overwrite,
                                  say=console.print)
    for table in results_tables(results):
        console.print(table)
    console.print("results: " + ", ".join(str(p) for p in paths if p.exists()))
    return 1 if any(r.status == "failed" for r in results.tasks) else 0


# --- evaluation data ----------------------------------------------------------------------------------


def build_command(args: argparse.Namespace) -> int:
    from winnow.services.evaluator.local_sets import build_local_sets

    built = build_local_sets(args.out, fashion_mnist_size=args.fashion_mnist_size, retrieval_size=args.retrieval_size,
                             samples_per_shard=args.samples_per_shard, sets=args.sets)
    console = Console()
    for item in built:
        console.print(f"{item.key}: {item.samples} samples in {item.shards} shards -> {item.folder}")
    return 0


def images_command(args: argparse.Namespace) -> int:
    from winnow.services.evaluator.data import export_images
    from winnow.services.evaluator.tasks import load_suite

    data_dir = evaluation_data_dir(args.data_dir)
    counts = export_images(data_dir, args.out, [t.wds_dir for t in load_suite().select(args.tasks)])
    if not counts:
        raise ValueError(f"no webdataset evaluation sets under {data_dir}")
    console = Console()
    for folder, count in counts.items():
        console.print(f"{folder}: {count} images")
    console.print(f"{sum(counts.values())} evaluation images -> {args.out}")
    return 0


def list_command(args: argparse.Namespace) -> int:
    from winnow.services.evaluator.evaluate import locate
    from winnow.services.evaluator.tasks import load_suite

    data_dir = evaluation_data_dir(args.data_dir)
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
