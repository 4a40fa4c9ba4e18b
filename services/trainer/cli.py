"""``winnow train``: DataComp's ``train.py`` on winnow's shards.

    winnow train --scale small --data_dir train/clip30 --output_dir runs --exp_name clip30
    winnow train --scale small --data_dir a --data_dir b --data_weights 0.7 0.3 --output_dir runs ...
    winnow train --scale small --data_dir jobs/j1 --data_dir s3://bucket/shards/ --data_dir extra.parquet ...
    torchrun --nproc_per_node 8 -m winnow.services.trainer.train --scale medium --data_dir ... (same options)

The scale fixes the model, the samples seen, the global batch size and the learning-rate schedule
(DataComp's debug, small, medium, large, xlarge, or winnow's tiny; or a scale .json file). A run
started again with the same --output_dir and --exp_name resumes from its newest checkpoint.
DataComp's ``a::b`` and ``1::2`` forms of --data_dir and --data_weights are accepted too.

A --data_dir is any data source: a folder of NNNNN.tar shards (local or s3://...), a winnow job
folder (its reshard/ subset, else its furthest stage), a pool of url and caption (parquet, CSV,
...; downloaded first into OUTPUT_DIR/EXP_NAME/sources/, once, with the download options below),
a .tar, a brace pattern or a pipe: URL. --data_weights are the proportions of samples drawn from
each source (DataComp's meaning), whatever their shard and sample counts.
"""

from __future__ import annotations

import argparse

from rich.console import Console

from winnow.services.downloader.cli import add_download_options, download_options
from winnow.services.downloader.pool import FORMATS
from winnow.services.trainer.scales import available_scales
from winnow.services.trainer.sources import PoolOptions
from winnow.services.trainer.train import PRECISIONS, TrainConfig, train


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--scale", required=True,
                        help=f"competition scale ({', '.join(available_scales())}) or a scale .json file")
    parser.add_argument("--data_dir", action="append", required=True,
                        help="one data source: shard folder (local or s3://...), winnow job folder, pool file "
                             "(parquet, csv, ...: downloaded first), .tar, brace pattern or pipe: URL; "
                             "repeat for several")
    parser.add_argument("--data_weights", nargs="+", default=None,
                        help="one weight per --data_dir: the proportions of samples drawn from the sources "
                             "(normalised; default: in proportion to their sizes)")
    parser.add_argument("--output_dir", required=True, help="folder for runs; this one goes to OUTPUT_DIR/EXP_NAME")
    parser.add_argument("--exp_name", default=None, help="name of the run (default: SCALE_scale)")
    parser.add_argument("--num_checkpoints", type=int, default=5, help="checkpoints saved over the run")
    parser.add_argument("--workers", type=int, default=4, help="data loader processes per rank")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="floating point precision (default: amp on CUDA, fp32 on CPU)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--resume", default="latest",
                        help="checkpoint to resume from (default: the run's newest; 'none' starts afresh)")
    parser.add_argument("--accum_freq", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--log_every_n_steps", type=int, default=100, help="log loss and throughput this often")
    parser.add_argument("--grad_clip_norm", type=float, default=None)
    parser.add_argument("--save_frequency", type=int, default=1,
                        help="keep epoch_K.pt every this many checkpoints; 0 keeps only the last")
    checkpointing = parser.add_mutually_exclusive_group()
    checkpointing.add_argument("--grad_checkpointing", dest="grad_checkpointing", action="store_const", const=True,
                               default=None, help="recompute activations in the backward pass to save memory "
                                                  "(default: on with CUDA, as DataComp; off on CPU)")
    checkpointing.add_argument("--no_grad_checkpointing", dest="grad_checkpointing", action="store_const",
                               const=False, help="keep activations (faster, more memory)")
    parser.add_argument("--report_to", default="none", help="none, tensorboard, wandb or all")
    parser.add_argument("--verbose", action="store_true",
                        help="open_clip's parameter dump and log lines instead of the progress bar")
    pools = parser.add_argument_group("pool sources (downloaded before training)")
    pools.add_argument("--pool_samples_per_shard", type=int, default=10_000, help="samples per downloaded shard")
    pools.add_argument("--pool_input_format", choices=FORMATS, default="", help="default: from the file name")
    pools.add_argument("--pool_url_col", default="url")
    pools.add_argument("--pool_caption_col", default="text")
    pools.add_argument("--pool_download_workers", type=int, default=2, help="shards downloaded at once")
    add_download_options(parser)
    return parser


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("train", help="train a CLIP model at a DataComp scale on a shard folder",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(func=train_command)
    return parser


def _split(values: list[str]) -> list[str]:
    return [part for value in values for part in str(value).split("::") if part]


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    weights = None
    if args.data_weights is not None:
        try:
            weights = tuple(float(w) for w in _split(args.data_weights))
        except ValueError as exc:
            raise ValueError(f"--data_weights must be numbers, got {args.data_weights}") from exc
    return TrainConfig(
        scale=args.scale, data=tuple(_split(args.data_dir)), data_weights=weights, output_dir=args.output_dir,
        exp_name=args.exp_name, num_checkpoints=args.num_checkpoints, workers=args.workers, seed=args.seed,
        precision=args.precision, device=args.device,
        resume=None if str(args.resume).lower() == "none" else args.resume, accum_freq=args.accum_freq,
        log_every_n_steps=args.log_every_n_steps, grad_clip_norm=args.grad_clip_norm,
        save_frequency=args.save_frequency, grad_checkpointing=args.grad_checkpointing,
        report_to=args.report_to, pool=pool_options(args), verbose=args.verbose)


def pool_options(args: argparse.Namespace) -> PoolOptions:
    """How pool sources are downloaded, from the pool and download options."""
    return PoolOptions(download=download_options(args), samples_per_shard=args.pool_samples_per_shard,
                       input_format=args.pool_input_format, url_col=args.pool_url_col,
                       caption_col=args.pool_caption_col or None, workers=args.pool_download_workers)


def train_command(args: argparse.Namespace) -> int:
    result = train(config_from_args(args))
    if result.info_path is not None:  # rank 0
        loss = f", final loss {result.final_loss:.4f}" if result.final_loss is not None else ""
        Console().print(f"trained {result.scale.name} ({result.scale.model}): {result.steps:,} steps, "
                        f"{result.samples_seen:,} samples seen{loss} in {result.seconds:.1f}s\n"
                        f"checkpoint: {result.checkpoint}\ninfo: {result.info_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The options of ``winnow train`` without the ``winnow`` command (``python -m``, torchrun)."""
    from winnow.shared.logs import configure_logging

    parser = add_arguments(argparse.ArgumentParser(prog="python -m winnow.services.trainer.train", description=__doc__,
                                                   formatter_class=argparse.RawDescriptionHelpFormatter))
    parser.add_argument("--log_level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level, json_format=False)
    try:
        return train_command(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        Console(stderr=True).print(f"[red]train: {exc}")
        return 2
