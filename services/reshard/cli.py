"""``winnow reshard``: DataComp's ``resharder.py`` on winnow (or img2dataset) shards.

    winnow reshard --input_dir out/embed --output_dir train/clip30 --subset_file clip30.npy \\
        --shard_size 10000 --shuffle_buffer 100000 --blur_faces
    winnow reshard -i shards -o train/clip30 -s clip30.npy -j 4 --apply-blur     # DataComp's spellings

A uid repeated in the subset is written once per repeat. The output is read by open_clip
training as it is: ``--train-data 'train/clip30/{00000000..0000NNNN}.tar'``.
"""

from __future__ import annotations

import argparse

from rich.console import Console

from winnow.services.reshard.resharder import ReshardConfig, reshard


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "reshard", help="copy a subset's samples into new shards (repeats upsample, optional face blur)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # DataComp's resharder.py spellings are accepted beside winnow's (-i/--input-dir, ...).
    parser.add_argument("--input_dir", "-i", "--input-dir", dest="input_dir", required=True,
                        help="folder (any fsspec URI) of .tar/.parquet/_stats.json shards")
    parser.add_argument("--output_dir", "-o", "--output-dir", dest="output_dir", required=True,
                        help="folder for the new shards")
    parser.add_argument("--subset_file", "-s", "--subset-file", dest="subset_file", required=True,
                        help="subset .npy of u8,u8 uids (winnow filter, DataComp)")
    parser.add_argument("--shard_size", "--shard-size", dest="shard_size", type=int, default=10_000,
                        help="samples per output shard")
    parser.add_argument("--shuffle_buffer", "--shuffle-bufsize", dest="shuffle_buffer", type=int, default=0,
                        help="samples held to shuffle the output; 0: no shuffle")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed")
    parser.add_argument("--blur_faces", "--apply-blur", dest="blur_faces", action="store_true", default=None,
                        help="blur the face_bboxes regions of any input (re-encodes those images); by default "
                             "only a winnow ledger's images not yet blurred are")
    parser.add_argument("--no_blur_faces", dest="blur_faces", action="store_false",
                        help="never blur, even where a winnow ledger's face_bboxes are not yet blurred")
    parser.add_argument("--blur_quality", type=int, default=95, help="JPEG/WebP quality of re-encoded images")
    parser.add_argument("--num_workers", "-j", "--num-workers", dest="num_workers", type=int, default=1,
                        help="processes, each writing its own run of shards")
    parser.add_argument("--overwrite", action="store_true", help="replace shards already in --output_dir")
    parser.add_argument("--dry_run", "--dry-run", dest="dry_run", action="store_true",
                        help="plan only: say what would be written, change nothing in --output_dir")
    parser.set_defaults(func=reshard_command)
    return parser


def config_from_args(args: argparse.Namespace) -> ReshardConfig:
    return ReshardConfig(input_dir=args.input_dir, output_dir=args.output_dir, subset_file=args.subset_file,
                         shard_size=args.shard_size, shuffle_buffer=args.shuffle_buffer, seed=args.seed,
                         blur_faces=args.blur_faces, blur_quality=args.blur_quality, num_workers=args.num_workers,
                         overwrite=args.overwrite, dry_run=args.dry_run)


def reshard_command(args: argparse.Namespace) -> int:
    result = reshard(config_from_args(args))
    console = Console()
    if args.dry_run:
        console.print(f"dry run: would write {result.expected:,} samples into {result.output_shards} shards "
                      f"from {result.input_shards} input shards -> {args.output_dir} (nothing written)")
        return 0
    console.print(f"wrote {result.samples_written:,} samples into {result.output_shards} shards "
                  f"({result.samples_read:,} read from {result.input_shards} input shards, {result.blurred:,} blurred) "
                  f"in {result.seconds:.1f}s -> {args.output_dir}")
    if result.output_shards:
        console.print(f"shards: {args.output_dir}/{{{0:08d}..{result.output_shards - 1:08d}}}.tar")
    if result.skipped_incomplete:
        console.print(f"[yellow]skipped {len(result.skipped_incomplete)} unfinished input shards")
    if result.not_in_parquet:
        console.print(f"[yellow]{result.not_in_parquet} tar samples were not in their parquet and were skipped")
    return 0 if result.samples_written == result.expected else 1
