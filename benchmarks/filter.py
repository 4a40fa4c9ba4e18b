"""CLIP-score filter over a small-scale pool: 12.8M rows of DataComp metadata, parquet to ``.npy``.

The pool is synthetic but has DataComp's schema and sizes: ``uid`` (32 hex characters of random
128-bit numbers), ``url``, ``text``, ``original_width``, ``original_height``,
``clip_b32_similarity_score`` and ``clip_l14_similarity_score`` (float32, the L/14 scores drawn
like DataComp's: about N(0.22, 0.05)), written as ``--files`` zstd parquet files (cached in
``benchmarks/_data``, made once). The timed step is what ``winnow filter --name clip_score --arch
l14 --fraction 0.3`` does: read ``uid`` and the score from every file, take the threshold at
index ``int(N * 0.3)`` of the descending scores, keep the rows at or above it, convert their
uids to ``u8,u8``, sort, and save the ``.npy``. The result is checked against numpy on the
generated scores. Best of ``--repeats`` runs (the files are in the page cache after the first).

Run from the repository root::

    .venv/bin/python -m benchmarks.filter [--rows 12800000] [--files 32] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from winnow.services.filter.apply import FilterConfig, apply_filter
from winnow.shared.subset import SUBSET_DTYPE, load_subset, uids_to_hex
from winnow.shared.logs import configure_logging

log = structlog.get_logger("benchmarks.filter")

DATA_DIR = Path(__file__).resolve().parent / "_data"
FRACTION = 0.3
WORDS = ("a photo of a dog cat red blue small large vintage car house tree beach city night sunset portrait "
         "logo icon drawing of the in on with and two three people woman man child food plate flower field "
         "mountain river boat train street wall art design pattern shirt dress shoe table chair book").split()


def pool_dir(rows: int, files: int) -> Path:
    return DATA_DIR / f"filter-pool-{rows}-{files}"


def make_pool(rows: int, files: int, seed: int = 0) -> tuple[Path, np.ndarray]:
    """Write (or reuse) the pool; returns its folder and all L/14 scores in row order."""
    folder = pool_dir(rows, files)
    scores_path = folder / "l14_scores.npy"
    if (folder / ".complete").exists():
        return folder, np.load(scores_path)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    captions = pa.array([" ".join(rng.choice(WORDS, size=rng.integers(2, 12))) for _ in range(20_000)])
    all_scores = []
    per_file = -(-rows // files)
    for index, start in enumerate(range(0, rows, per_file)):
        n = min(per_file, rows - start)
        raw = rng.integers(0, 2**64, size=(n, 2), dtype=np.uint64, endpoint=False)
        uids = np.empty(n, dtype=SUBSET_DTYPE)
        uids["f0"], uids["f1"] = raw[:, 0], raw[:, 1]
        l14 = rng.normal(0.22, 0.05, n).astype(np.float32)
        b32 = (l14 + rng.normal(0.08, 0.03, n)).astype(np.float32)
        width = rng.integers(64, 2048, n)
        height = rng.integers(64, 2048, n)
        table = pa.table({
            "uid": pa.array(uids_to_hex(uids)),
            "url": pa.array([f"https://example.com/{start + i}.jpg" for i in range(n)]),
            "text": captions.take(pa.array(rng.integers(0, len(captions), n))),
            "original_width": pa.array(width), "original_height": pa.array(height),
            "clip_b32_similarity_score": pa.array(b32), "clip_l14_similarity_score": pa.array(l14),
        })
        pq.write_table(table, folder / f"{index:08d}.parquet", compression="zstd", row_group_size=128 * 1024)
        all_scores.append(l14)
        log.info("wrote pool file", file=index, rows=n)
    scores = np.concatenate(all_scores)
    np.save(scores_path, scores)
    (folder / ".complete").write_text(str(rows))
    return folder, scores


def run_once(folder: Path, save_path: Path) -> tuple[float, int, float]:
    started = time.perf_counter()
    result = apply_filter(FilterConfig(name="clip_score", metadata_dir=str(folder), save_path=str(save_path),
                                       arch="l14", fraction=FRACTION))
    return time.perf_counter() - started, result.kept, result.threshold


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=12_800_000)
    parser.add_argument("--files", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    configure_logging(json_format=False)
    t0 = time.perf_counter()
    folder, scores = make_pool(args.rows, args.files)
    log.info("pool ready", folder=str(folder), rows=len(scores), seconds=round(time.perf_counter() - t0, 1))
    expected_threshold = -np.sort(-scores)[int(len(scores) * FRACTION)]  # DataComp's get_threshold
    expected_kept = int((scores >= expected_threshold).sum())
    work = Path(tempfile.mkdtemp(prefix="winnow-filter-bench-"))
    try:
        times = []
        for run in range(args.repeats):
            save_path = work / f"subset-{run}.npy"
            seconds, kept, threshold = run_once(folder, save_path)
            if kept != expected_kept or np.float32(threshold) != expected_threshold:
                raise SystemExit(f"wrong result: kept {kept} at {threshold}, expected {expected_kept} at "
                                 f"{expected_threshold}")
            subset = load_subset(str(save_path))  # checks dtype and order
            assert len(subset) == expected_kept
            times.append(seconds)
            log.info("run", run=run, seconds=round(seconds, 2), kept=kept)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = sum(f.stat().st_size for f in folder.glob("*.parquet"))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {"rows": len(scores), "files": args.files, "parquet_mb": round(size / 2**20), "fraction": FRACTION,
               "kept": expected_kept, "best_seconds": round(min(times), 2), "first_seconds": round(times[0], 2),
               "rows_per_second": round(len(scores) / min(times)), "peak_rss_mb": round(peak_mb),
               "cpus": os.cpu_count()}
    print(f"clip_score l14 fraction {FRACTION}: {figures['rows']:,} rows in {args.files} parquet files "
          f"({figures['parquet_mb']} MB) -> {expected_kept:,} uids saved; best {figures['best_seconds']} s "
          f"(first {figures['first_seconds']} s), {figures['rows_per_second']:,} rows/s, "
          f"peak RSS {figures['peak_rss_mb']} MB, {figures['cpus']} CPUs")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
