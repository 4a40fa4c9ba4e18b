"""Evaluation time per task on winnow's local sets, with a small CLIP and without one.

The sets are the real offline ones that ``winnow eval-data build`` writes (Fashion-MNIST zero-shot
classification, openclipart retrieval), built once into ``benchmarks/_data/eval-{sizes}/``. Each
task is evaluated ``--repeats`` times through :func:`winnow.services.evaluator.evaluate.evaluate`, and the
median is reported, twice:

* ``clip``: an open_clip model (default ``winnow-tiny-ViT`` with random weights, or ``--checkpoint``)
  through :class:`winnow.shared.models.clip.OpenClipEncoder`: the time a user waits;
* ``no model``: an encoder that returns fixed random vectors at once: what the evaluator itself
  costs (reading the tars, decoding the images, the metrics), the floor under any model.

Run from the repository root::

    .venv/bin/python -m benchmarks.evaluate [--repeats 3] [--threads 2] [--json out.json]
    .venv/bin/python -m benchmarks.evaluate --quick      # small sets, one repeat
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from winnow.services.evaluator.evaluate import evaluate
from winnow.services.evaluator.local_sets import build_local_sets
from winnow.shared.logs import configure_logging

DATA = Path(__file__).resolve().parent / "_data"


class NoModel:
    """Embeddings without a model: a fixed random table, cycled, so only the evaluator's own work is timed."""

    name = "no model"

    def __init__(self, dim: int = 128) -> None:
        rows = np.random.default_rng(0).standard_normal((4096, dim)).astype(np.float32)
        self.table = rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def _rows(self, n: int) -> np.ndarray:
        return self.table[np.arange(n) % len(self.table)]

    def embed_images(self, images):
        return self._rows(len(images))

    def embed_texts(self, texts):
        return self._rows(len(texts))


def eval_root(fashion_mnist_size: int, retrieval_size: int) -> Path:
    root = DATA / f"eval-{fashion_mnist_size}-{retrieval_size}"
    if not all((root / d / "test" / "nshards.txt").is_file()
               for d in ("wds_fashion_mnist_test", "wds_openclipart_retrieval_test")):
        build_local_sets(root, fashion_mnist_size=fashion_mnist_size, retrieval_size=retrieval_size)
    return root


def time_tasks(encoder, root: Path, repeats: int, batch_size: int) -> dict[str, dict]:
    runs: dict[str, list] = {}
    for _ in range(repeats):
        for result in evaluate(encoder, root, tasks=["local"], batch_size=batch_size).tasks:
            if result.status != "ok":
                raise RuntimeError(f"{result.name}: {result.status} {result.error}")
            runs.setdefault(result.name, []).append(result)
    out = {}
    for name, results in runs.items():
        seconds = statistics.median(r.seconds for r in results)
        out[name] = {"seconds": seconds, "samples": results[0].samples, "per_second": results[0].samples / seconds,
                     "score": results[0].score, "main_metric": results[0].main_metric,
                     "all_seconds": [round(r.seconds, 3) for r in results]}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="winnow-tiny-ViT")
    parser.add_argument("--checkpoint", default=None, help="weights for --arch (default: random)")
    parser.add_argument("--fashion_mnist_size", type=int, default=1000)
    parser.add_argument("--retrieval_size", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="200 + 60 images, one repeat")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.fashion_mnist_size, args.retrieval_size, args.repeats = 200, 60, 1
    configure_logging("WARNING", json_format=False)

    import torch
    from rich.console import Console
    from rich.table import Table

    from winnow.shared.models.clip import OpenClipEncoder

    if args.threads:
        torch.set_num_threads(args.threads)
    root = eval_root(args.fashion_mnist_size, args.retrieval_size)
    clip = OpenClipEncoder(args.arch, pretrained=args.checkpoint, device=args.device, batch_size=args.batch_size)
    evaluate(clip, root, tasks=["local"], batch_size=args.batch_size)  # warm-up: first-call costs
    figures = {"arch": args.arch, "checkpoint": args.checkpoint, "device": args.device,
               "threads": torch.get_num_threads(), "repeats": args.repeats, "data": str(root),
               "clip": time_tasks(clip, root, args.repeats, args.batch_size),
               "no_model": time_tasks(NoModel(), root, args.repeats, args.batch_size)}

    table = Table(title=f"evaluation time per task: {args.arch} on {args.device}, {figures['threads']} threads, "
                        f"median of {args.repeats}")
    for column in ("task", "samples", "clip s", "clip samples/s", "no model s", "no model samples/s", "score"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for name, timed in figures["clip"].items():
        floor = figures["no_model"][name]
        table.add_row(name, str(timed["samples"]), f"{timed['seconds']:.2f}", f"{timed['per_second']:.0f}",
                      f"{floor['seconds']:.2f}", f"{floor['per_second']:.0f}",
                      f"{timed['main_metric']} {timed['score']:.4f}")
    Console(width=150).print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
