"""``winnow dedup build-index``: descriptors of evaluation images, for decontaminating the pool."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import track

from winnow.services.dedup.index import EvalIndex
from winnow.shared.models.registry import load_model
from winnow.shared.service.images import decode_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def add_parser(subparsers) -> None:
    dedup = subparsers.add_parser("dedup", help="evaluation-set decontamination")
    commands = dedup.add_subparsers(dest="dedup_command", required=True)
    build = commands.add_parser("build-index", help="index the images of a folder (recursively)")
    build.add_argument("--images", required=True, help="folder of evaluation images")
    build.add_argument("--out", required=True, help="index directory (eval.faiss + eval.json)")
    build.add_argument("--model_preset", default="offline", help="descriptor preset: offline or production")
    build.add_argument("--threshold", type=float, default=None, help="cosine at or above which a pool image "
                       "is a copy (default: the descriptor's)")
    build.add_argument("--batch_size", type=int, default=64)
    build.set_defaults(func=build_index)


def build_index(args: argparse.Namespace) -> int:
    console = Console()
    paths = sorted(p for p in Path(args.images).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"no images under {args.images}")
    descriptor = load_model("near_duplicate", args.model_preset)
    vectors, names, skipped = [], [], 0
    batches = [paths[i:i + args.batch_size] for i in range(0, len(paths), args.batch_size)]
    for batch in track(batches, description="describing", console=console):
        images = []
        for path in batch:
            try:
                images.append(decode_image(path.read_bytes()))
                names.append(str(path.relative_to(args.images)))
            except ValueError:
                skipped += 1
        if images:
            vectors.append(descriptor.describe(images))
    index = EvalIndex.build(np.concatenate(vectors), names, descriptor, args.threshold)
    index.save(Path(args.out))
    console.print(f"indexed {len(names)} evaluation images ({skipped} unreadable skipped) with {descriptor.name}, "
                  f"threshold {index.threshold} -> {args.out}")
    return 0
