"""The ``winnow`` command, every subcommand of it:

Curation, in one process:
    winnow run POOL --out DIR            download, safety, dedup, blur, embed, filter + reshard
    winnow run --example --out DIR       the same on a built-in pool of real images
    winnow run --shards DIR --out JOB    curate img2dataset/DataComp shards one already has, in place
    winnow download ... / redownload     img2dataset's command line on winnow's downloader
    winnow extract ...                   image URLs and alt text from Common Crawl WARC/WAT files
    winnow dedup build-index ...         an evaluation-set index for decontamination
    winnow filter ... / reshard ...      DataComp's baselines (or your own filter) and its resharder
    winnow report JOB --out FILE         a curation report of a job, as one offline HTML page
Models, training and evaluation:
    winnow models list|repository|fetch|train-clip|serve
    winnow train ... / evaluate ... / eval-data build|images|list
Operations:
    winnow deploy render|check           docker-compose.yml and k8s/ from the topology
    winnow up / status / scale / submit / down   the topology as local processes
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from winnow.services.dedup import cli as dedup_cli
from winnow.services.downloader import cli as downloader_cli
from winnow.services.evaluator import cli as evaluator_cli
from winnow.services.extractor import cli as extractor_cli
from winnow.services.filter import cli as filter_cli
from winnow.services.filter.apply import BASELINES
from winnow.report import cli as report_cli
from winnow.services.reshard import cli as reshard_cli
from winnow.services.trainer import cli as trainer_cli
from winnow.services.downloader.pool import FORMATS, PoolFormatError
from winnow.pipeline import STAGE_NAMES, STAGE_OPTIONS, resolve_stage_options
from winnow.shared.option_flags import add_option_flags, options_from_args
from winnow import shards_run
from winnow.ops.deploy import cli as deploy_cli
from winnow.ops.devstack import cli as devstack_cli
from winnow.shared.logs import configure_logging
from winnow.ops import models_cli
from winnow.shared.shards import ShardFormatError
from winnow.shared.summary import print_stage_summary


def _add_run_parser(subparsers) -> None:
    parser = subparsers.add_parser("run", help="run the pipeline in one process (embedded bus, local files)",
                                   formatter_class=downloader_cli.Formatter)
    parser.add_argument("pool", nargs="?", help="pool file or directory (parquet, csv, tsv, json, jsonl, txt)")
    parser.add_argument("--out", required=True, help="job directory for every stage's shards")
    parser.add_argument("--example", action="store_true",
                        help="use the built-in pool of real images, served from 127.0.0.1 for this run")
    shards_run.add_arguments(parser)
    parser.add_argument("--input_format", choices=FORMATS, default="")
    parser.add_argument("--url_col", default="url")
    parser.add_argument("--caption_col", default="text")
    parser.add_argument("--samples_per_shard", type=int, default=10_000)
    parser.add_argument("--max_samples", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="shards processed at once per stage")
    parser.add_argument("--model_threads", type=int, default=None, metavar="N",
                        help="CPU threads per in-process model call (default: 1 where the stages' workers already "
                             "fill the CPUs, else the libraries' own; 0: the libraries' own, every core)")
    parser.add_argument("--no_progress", action="store_true")
    pipeline = parser.add_argument_group("pipeline")
    pipeline.add_argument("--stages", nargs="+", default=list(STAGE_NAMES), metavar="STAGE",
                          help=f"stages to run, in order: {' '.join(STAGE_NAMES)} (embed needs --clip_model), and "
                               "any installed stage plugin (entry-point group winnow.stages) where it should run")
    pipeline.add_argument("--stage_option", action="append", default=[], metavar="STAGE:KEY=VALUE",
                          help="an option of a stage plugin, e.g. sharpness:min_sharpness=50 (winnow's own "
                               "stages take these too, as their --STAGE.OPTION flags below)")
    pipeline.add_argument("--model_preset", default="offline", help="offline (weights in packages) or production")
    pipeline.add_argument("--triton_url", default="", help="serve the models from this Triton (host:port)")
    pipeline.add_argument("--eval_index", default="", help="evaluation-set index for dedup (winnow dedup build-index)")
    pipeline.add_argument("--clip_model", action="append", default=[], metavar="KEY=ARCH[:CHECKPOINT]",
                          help="a CLIP model for embed, e.g. b32=ViT-B-32:openai or tiny=winnow-tiny-ViT:ckpt.pt")
    pipeline.add_argument("--filter", default="basic_filter", metavar="NAME",
                          help=f"DataComp baseline applied to the whole pool at the end, then resharded: none, "
                               f"{', '.join(BASELINES)}, or module:function for a filter of your own")
    pipeline.add_argument("--threshold", type=float, default=None, help="clip_score baselines: score threshold")
    pipeline.add_argument("--fraction", type=float, default=None, help="clip_score baselines: top fraction kept")
    pipeline.add_argument("--arch", default=None, help="clip_score baselines: which model key's score (b32, l14)")
    pipeline.add_argument("--shard_size", type=int, default=10_000, help="samples per resharded shard")
    faces = pipeline.add_mutually_exclusive_group()
    faces.add_argument("--blur_at_rest", action="store_true",
                       help="the blur stage keeps blurred images (a tar per shard) and removes the job's unblurred "
                            "downloader tars; by default it records face_bboxes and the resharder blurs them")
    faces.add_argument("--no_blur_faces", action="store_true",
                       help="the resharded subset keeps faces unblurred (face_bboxes are still recorded)")
    for spec in STAGE_OPTIONS:  # --safety.nsfw_threshold, ...: the fields of each stage's options dataclass
        add_option_flags(parser.add_argument_group(f"{spec.stage} stage (its options; the service's WINNOW_* "
                                                   "settings of the same names)"),
                         spec.items(), prefix=f"{spec.stage}.")
    loop = parser.add_argument_group("training and evaluation (the full DataComp loop)")
    loop.add_argument("--train_scale", default="", help="train a CLIP on the subset at this scale (e.g. tiny)")
    loop.add_argument("--eval_data", default="", help="evaluate the trained model on these sets "
                      "(winnow eval-data build --out DIR)")
    downloader_cli.add_download_options(parser)
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    from winnow.services.downloader.job import DownloadSpec
    from winnow import api

    if bool(args.pool) + bool(args.example) + bool(args.shards) != 1:
        raise SystemExit("winnow run: give a POOL, --example or --shards DIR_OR_URI (one of them)")
    console = Console()
    # Training, when asked for, comes after the curation's summary is printed (train_and_evaluate).
    given = any(a == "--stages" or a.startswith("--stages=") for a in args.argv)
    stages = args.stages if given else None  # None: the default for the kind of job
    result = api.run(args.pool or None, args.out, example=args.example, shards=args.shards or None,
                     images_blurred=args.images_blurred, stages=stages,
                     stage_options=stage_options_from_args(args), model_preset=args.model_preset, triton_url=args.triton_url,
                     eval_index=args.eval_index, clip_models=args.clip_model, filter=args.filter,
                     threshold=args.threshold, fraction=args.fraction, arch=args.arch, shard_size=args.shard_size,
                     input_format=args.input_format, url_col=args.url_col, caption_col=args.caption_col,
                     samples_per_shard=args.samples_per_shard, max_samples=args.max_samples, workers=args.workers,
                     model_threads=args.model_threads, blur_at_rest=args.blur_at_rest, blur_faces=False if args.no_blur_faces else None,
                     download=DownloadSpec.from_namespace(args), show_progress=not args.no_progress,
                     say=console.print)
    print_stage_summary(console, result.totals)
    if result.filtered is not None:
        filtered = result.filtered
        console.print(f"{filtered.name}: kept {filtered.samples_written} samples in {filtered.shard_count} shards "
                      f"-> {filtered.shards}")
        print_filter_criteria(console, result.job_root)
        if args.train_scale:
            train_and_evaluate(args, result.manifest, filtered.shards, console)
    for letter in result.dead_letters:
        console.print(f"[red]shard {letter.ref.shard_id} failed in {letter.stage}: {letter.error.splitlines()[0]}")
    return 1 if result.dead_letters else 0


def stage_options_from_args(args: argparse.Namespace) -> dict:
    """Options by stage: each of winnow's stages whose ``--STAGE.OPTION`` flags (with its
    ``--stage_option`` text on top) differ from its defaults, as its options dataclass; a plugin's
    ``--stage_option`` text as it is (``load_stage`` reads it into the plugin's options)."""
    flags = {spec.stage: options_from_args(args, spec.options_type(), spec.items(), prefix=f"{spec.stage}.")
             for spec in STAGE_OPTIONS}
    resolved = resolve_stage_options(args.stage_option, bases=flags)
    return {name: value for name, value in resolved.items() if name not in flags or value != type(value)()}


def print_filter_criteria(console: Console, job_root: str) -> None:
    """What each of the filter's criteria removed, from the summary written beside its subset."""
    from winnow.services.filter.cli import print_criteria
    from winnow.services.filter.stage import filter_summary

    summary = filter_summary(job_root)
    if summary and summary.get("removed_by"):
        print_criteria(console, summary["filter"], summary["removed_by"], summary.get("rules", {}),
                       kept=summary["kept"], candidates=summary["candidates"])


def train_and_evaluate(args: argparse.Namespace, manifest, subset_dir: str, console: Console) -> None:
    """Train the chosen scale on the subset, then evaluate it and print DataComp's table."""
    from winnow import api

    trained = api.train(args.train_scale, [subset_dir], f"{manifest.job_root}/training",
                        exp_name=f"{args.train_scale}_scale", num_checkpoints=2, workers=1)
    console.print(f"trained {trained.scale.name} ({trained.scale.model}): {trained.samples_seen} samples seen, "
                  f"final loss {trained.final_loss} -> {trained.checkpoint}")
    if not args.eval_data:
        console.print("evaluation skipped: no --eval_data (winnow eval-data build --out DIR)")
        return
    from winnow.services.evaluator.evaluate import results_tables

    evaluation = api.evaluate(trained.run_dir, data_dir=args.eval_data, say=console.print)
    for table in results_tables(evaluation.results):
        console.print(table)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="winnow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log_level", default="WARNING")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_run_parser(subparsers)
    downloader_cli.add_parser(subparsers)
    extractor_cli.add_parser(subparsers)
    dedup_cli.add_parser(subparsers)
    filter_cli.add_parser(subparsers)
    reshard_cli.add_parser(subparsers)
    report_cli.add_parser(subparsers)
    models_cli.add_parser(subparsers)
    trainer_cli.add_parser(subparsers)
    evaluator_cli.add_parser(subparsers)
    deploy_cli.add_parser(subparsers)
    devstack_cli.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # which options were given (download --scale)
    configure_logging(args.log_level, json_format=False)
    try:
        return args.func(args)
    except (PoolFormatError, ShardFormatError, FileNotFoundError, ValueError, RuntimeError) as exc:
        Console(stderr=True, soft_wrap=True).print(f"[red]winnow {args.command}: {exc}")  # one line, unwrapped
        return 2


if __name__ == "__main__":
    sys.exit(main())
