"""Dedup lookups: faiss queries per second against 1M descriptors, and the dedup stage's own paths.

Descriptors are 256-d float32, L2-normalised (inner product = cosine), of two kinds:

* ``phash``: what :class:`winnow.shared.models.near_duplicates.PerceptualHashDescriptor` gives, 256
  random bits as entries of +-1/16; near-duplicate queries are copies with 20 bits flipped
  (cosine 0.84; the descriptor's threshold is 0.5586);
* ``isc``: Gaussian directions, like ISC21 descriptors (DataComp's, threshold 0.604169);
  near-duplicate queries are copies plus noise (cosine about 0.8).

Half of the ``--queries`` query descriptors are near-duplicates of random database entries, half
are new. Measured, with ``--threads`` faiss (OpenMP) threads:

* ``flat``: the ``IndexFlatIP`` that :class:`winnow.services.dedup.index.EvalIndex` and
  the per-sample pool registry (``benchmarks.dedup_pool.LegacyPoolRegistry``) use: ``EvalIndex.build`` time, then queries per second
  for the whole query set at once (top-1 and top-8) and for one query per call (``--single``
  calls; what ``PoolRegistry.claim_image`` does per sample);
* ``ivf``: an ``IndexIVFFlat`` (``--nlist`` lists, trained on a sample) for comparison: train and
  add time, queries per second and recall (the near-duplicate's source found at top-1) per
  ``--nprobe``; the pool index switches to one past ``WINNOW_POOL_FLAT_LIMIT`` float descriptors;
* ``EvalIndex.match`` on the 1M-descriptor index in batches of ``--eval-batch`` (the stage's);
* the per-sample registry the pool index replaced (``benchmarks.dedup_pool`` compares the two):
  ``claim_image`` while filling a registry of ``--registry`` new descriptors,
  then ``--claims`` claims against the full registry (half near-duplicates, which are answered
  without writing, half new, which are inserted into SQLite), beside one-query searches of the
  same vectors on a bare ``IndexFlatIP`` and on the registry's ``IndexIDMap(IndexFlatIP)``
  (whose id translation opens an OpenMP parallel region per call: cheap on an idle machine,
  milliseconds when the cores are busy), ``claim_hash`` (SQLite alone: each call is its own
  WAL transaction), and the time to reopen the registry (it rebuilds its index from SQLite).
  The registry lives in ``--work-dir`` (default: a temporary directory): its SQLite commits each
  claim, so the disk under it matters.

Run from the repository root::

    .venv/bin/python -m benchmarks.dedup [--size 1000000] [--queries 10000] [--kinds phash,isc] [--json out.json]
    .venv/bin/python -m benchmarks.dedup --quick     # a small smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import faiss
import numpy as np
import structlog

from benchmarks.dedup_pool import LegacyPoolRegistry as PoolRegistry  # the per-sample path; see dedup_pool
from winnow.services.dedup.index import EvalIndex
from winnow.shared.logs import configure_logging

log = structlog.get_logger("benchmarks.dedup")

DIM = 256
THRESHOLDS = {"phash": 1.0 - (2 * 56 + 1) / DIM, "isc": 0.604169}
FLIPPED_BITS = 20  # phash near-duplicates: cosine 1 - 2 * 20 / 256 = 0.84
ISC_NOISE = 0.75  # isc near-duplicates: x + 0.75 * noise (unit direction), cosine about 0.8
CHUNK = 65_536


# --- descriptors --------------------------------------------------------------------------------


def descriptors(kind: str, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` random L2-normalised descriptors of ``kind``, float32 (filled in chunks: 1M is 1 GB)."""
    out = np.empty((count, DIM), dtype=np.float32)
    for start in range(0, count, CHUNK):
        n = min(CHUNK, count - start)
        if kind == "phash":
            bits = rng.integers(0, 2, size=(n, DIM), dtype=np.uint8)
            out[start:start + n] = np.where(bits, np.float32(1 / 16), np.float32(-1 / 16))
        else:
            part = rng.standard_normal((n, DIM), dtype=np.float32)
            out[start:start + n] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return out


def near_copies(kind: str, sources: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Near-duplicates of ``sources``, well above the descriptor's threshold."""
    if kind == "phash":
        copies = sources.copy()
        for row in copies:
            flip = rng.choice(DIM, FLIPPED_BITS, replace=False)
            row[flip] = -row[flip]
        return copies
    noise = rng.standard_normal(sources.shape, dtype=np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    copies = sources + ISC_NOISE * noise
    return copies / np.linalg.norm(copies, axis=1, keepdims=True)


def query_set(kind: str, database: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` queries, the first half near-duplicates of the database rows returned, the rest new."""
    near = count // 2
    sources = rng.choice(len(database), near, replace=False)
    queries = np.concatenate([near_copies(kind, database[sources], rng), descriptors(kind, count - near, rng)])
    return np.ascontiguousarray(queries), sources


# --- timing -------------------------------------------------------------------------------------


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def per_second(work: Callable[[], object], items: int, repeats: int) -> float:
    """Items per second of the median of ``repeats`` runs of ``work``."""
    return items / statistics.median(timed(work) for _ in range(repeats))


def single_queries_per_second(index: faiss.Index, queries: np.ndarray, k: int) -> float:
    """Queries per second, one query per ``search`` call."""
    started = time.perf_counter()
    for row in queries:
        index.search(row.reshape(1, -1), k)
    return len(queries) / (time.perf_counter() - started)


def recall_at_1(index: faiss.Index, queries: np.ndarray, sources: np.ndarray) -> float:
    """The share of the near-duplicate queries whose source comes back first."""
    _, ids = index.search(queries[:len(sources)], 1)
    return float(np.mean(ids[:, 0] == sources))


# --- the measurements ---------------------------------------------------------------------------


def flat(database: np.ndarray, queries: np.ndarray, sources: np.ndarray, kind: str,
         args) -> tuple[EvalIndex, dict]:
    """``EvalIndex.build`` (an ``IndexFlatIP``) over the database, then searches on its index."""
    descriptor = SimpleNamespace(name=kind, dim=DIM, threshold=THRESHOLDS[kind])
    names = [f"eval-{i}" for i in range(len(database))]
    started = time.perf_counter()
    evaluation = EvalIndex.build(database, names, descriptor)
    build = time.perf_counter() - started
    index = evaluation.index
    log.info("flat_built", size=index.ntotal, seconds=round(build, 2))
    recall = recall_at_1(index, queries, sources)
    if recall < 0.999:
        raise SystemExit(f"flat search found only {recall:.3f} of the near-duplicates' sources; the data is wrong")
    figures = {"build_seconds": round(build, 3), "recall_at_1": recall}
    for k in (1, 8):
        figures[f"batch_top{k}_qps"] = round(per_second(lambda k=k: index.search(queries, k), len(queries),
                                                        args.repeats), 1)
        log.info("flat_batch", k=k, qps=figures[f"batch_top{k}_qps"])
    single = queries[:args.single]
    figures["single_top8_qps"] = round(single_queries_per_second(index, single, 8), 1)
    log.info("flat_single", qps=figures["single_top8_qps"], queries=len(single))
    return evaluation, figures


def ivf(database: np.ndarray, queries: np.ndarray, sources: np.ndarray, args, rng: np.random.Generator) -> dict:
    quantizer = faiss.IndexFlatIP(DIM)
    index = faiss.IndexIVFFlat(quantizer, DIM, args.nlist, faiss.METRIC_INNER_PRODUCT)
    sample = database[rng.choice(len(database), min(len(database), 64 * args.nlist), replace=False)]
    train = timed(lambda: index.train(sample))
    add = timed(lambda: index.add(database))
    log.info("ivf_built", nlist=args.nlist, train_seconds=round(train, 2), add_seconds=round(add, 2))
    figures: dict = {"nlist": args.nlist, "train_seconds": round(train, 3), "add_seconds": round(add, 3)}
    for nprobe in args.nprobe:
        index.nprobe = nprobe
        figures[f"nprobe_{nprobe}"] = {
            "batch_top1_qps": round(per_second(lambda: index.search(queries, 1), len(queries), args.repeats), 1),
            "single_top8_qps": round(single_queries_per_second(index, queries[:args.single], 8), 1),
            "recall_at_1": round(recall_at_1(index, queries, sources), 4),
        }
        log.info("ivf_search", nprobe=nprobe, **figures[f"nprobe_{nprobe}"])
    return figures


def eval_match(evaluation: EvalIndex, queries: np.ndarray, sources: np.ndarray, batch: int) -> dict:
    """``EvalIndex.match`` in calls of ``batch`` descriptors (at most 32 calls), checked on the near-duplicates."""
    count = min(len(queries), 32 * batch)
    batches = [queries[start:start + batch] for start in range(0, count, batch)]
    seconds = timed(lambda: [evaluation.match(part) for part in batches])
    _, matches = evaluation.match(queries[:len(sources)])
    found = np.mean([match == f"eval-{source}" for match, source in zip(matches, sources)])
    if found < 0.999:
        raise SystemExit(f"EvalIndex.match matched only {found:.3f} of the near-duplicates")
    log.info("eval_match", batch=batch, qps=round(count / seconds, 1))
    return {"batch": batch, "qps": round(count / seconds, 1)}


def registry(kind: str, args, work: Path, rng: np.random.Generator) -> dict:
    """``PoolRegistry`` filled by ``claim_image`` to ``--registry``, then ``--claims`` claims against it."""
    path = work / f"registry-{kind}.sqlite"
    threshold = THRESHOLDS[kind]
    kept = descriptors(kind, args.registry, rng)
    pool = PoolRegistry(path, DIM)
    started = time.perf_counter()
    report_every = max(1, args.registry // 10)
    for i, vector in enumerate(kept):
        owner, _ = pool.claim_image(vector, f"kept-{i}", threshold)
        if owner != f"kept-{i}":  # random descriptors are never near-identical
            raise SystemExit(f"registry: kept-{i} was judged a duplicate of {owner}")
        if (i + 1) % report_every == 0:
            log.info("registry_filling", claims=i + 1, per_second=round((i + 1) / (time.perf_counter() - started), 1))
    fill = time.perf_counter() - started

    half = args.claims // 2
    duplicates = near_copies(kind, kept[rng.choice(len(kept), half, replace=False)], rng)
    new = descriptors(kind, args.claims - half, rng)
    started = time.perf_counter()
    for i, vector in enumerate(duplicates):
        owner, _ = pool.claim_image(vector, f"copy-{i}", threshold)
        if not owner.startswith("kept-"):
            raise SystemExit(f"registry: copy-{i} was not found to be a near-duplicate")
    duplicate_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for i, vector in enumerate(new):
        pool.claim_image(vector, f"new-{i}", threshold)
    new_seconds = time.perf_counter() - started
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(args.claims)]
    hash_seconds = timed(lambda: [pool.claim_hash(sha, f"hash-{i}") for i, sha in enumerate(hashes)])
    pool.close()

    bare = faiss.IndexFlatIP(DIM)
    bare.add(kept)
    search_qps = single_queries_per_second(bare, new[:args.single], 8)
    mapped = faiss.IndexIDMap(faiss.IndexFlatIP(DIM))  # the registry's own index type
    mapped.add_with_ids(kept, np.arange(1, len(kept) + 1, dtype=np.int64))
    mapped_qps = single_queries_per_second(mapped, new[:args.single], 8)
    reopen = timed(lambda: PoolRegistry(path, DIM).close())
    figures = {
        "size": args.registry,
        "fill_claims_per_second": round(args.registry / fill, 1),
        "duplicate_claims_per_second": round(half / duplicate_seconds, 1),
        "new_claims_per_second": round((args.claims - half) / new_seconds, 1),
        "bare_search_top8_qps": round(search_qps, 1),
        "bare_idmap_search_top8_qps": round(mapped_qps, 1),
        "claim_hash_per_second": round(args.claims / hash_seconds, 1),
        "reopen_seconds": round(reopen, 3),
        "sqlite_mb": round(sum(f.stat().st_size for f in work.glob(f"{path.name}*")) / 2**20, 1),
    }
    log.info("registry", kind=kind, **figures)
    return figures


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="descriptors in the flat and IVF indexes")
    parser.add_argument("--queries", type=int, default=10_000, help="queries per batched search")
    parser.add_argument("--single", type=int, default=200, help="queries timed one per search call")
    parser.add_argument("--kinds", default="phash", help="comma-separated: phash, isc")
    parser.add_argument("--nlist", type=int, default=1024, help="IVF lists; 0 skips the IVF comparison")
    parser.add_argument("--nprobe", default="1,8,32", help="comma-separated IVF nprobe values")
    parser.add_argument("--eval-batch", type=int, default=64, help="descriptors per EvalIndex.match call")
    parser.add_argument("--registry", type=int, default=20_000, help="descriptors claimed into the PoolRegistry")
    parser.add_argument("--claims", type=int, default=2_000, help="claims timed against the full registry")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="faiss OpenMP threads")
    parser.add_argument("--repeats", type=int, default=3, help="batched searches: median of this many")
    parser.add_argument("--work-dir", type=Path, help="where the registry's SQLite goes (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 50k descriptors, small registry")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.queries, args.single = min(args.size, 50_000), min(args.queries, 1_000), min(args.single, 100)
        args.registry, args.claims, args.nlist = min(args.registry, 2_000), min(args.claims, 400), min(args.nlist, 64)
        args.repeats = 1
    args.nprobe = [int(n) for n in args.nprobe.split(",") if n]
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    unknown = sorted(set(kinds) - set(THRESHOLDS))
    if unknown:
        parser.error(f"unknown descriptor kind(s) {', '.join(unknown)}; choose from {', '.join(THRESHOLDS)}")
    configure_logging("INFO", json_format=False)
    faiss.omp_set_num_threads(args.threads)

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="winnow-bench-dedup-"))
    work.mkdir(parents=True, exist_ok=True)
    figures: dict = {"size": args.size, "dim": DIM, "queries": args.queries, "threads": args.threads,
                     "cpus": os.cpu_count(), "faiss": faiss.__version__}
    try:
        for kind in kinds:
            rng = np.random.default_rng(0)
            started = time.perf_counter()
            database = descriptors(kind, args.size, rng)
            queries, sources = query_set(kind, database, args.queries, rng)
            log.info("descriptors_ready", kind=kind, size=args.size, seconds=round(time.perf_counter() - started, 1))
            evaluation, results = flat(database, queries, sources, kind, args)
            results = {"flat": results, "eval_match": eval_match(evaluation, queries, sources, args.eval_batch)}
            del evaluation
            if args.nlist:
                results["ivf"] = ivf(database, queries, sources, args, rng)
            del database
            results["registry"] = registry(kind, args, work, rng)
            figures[kind] = results
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    report(figures, kinds)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def report(figures: dict, kinds: list[str]) -> None:
    print(f"dedup: {figures['size']:,} x {figures['dim']}-d float32 descriptors, {figures['queries']:,} queries "
          f"(half near-duplicates), faiss {figures['faiss']}, {figures['threads']} threads, {figures['cpus']} CPUs")
    for kind in kinds:
        result = figures[kind]
        flat_figures = result["flat"]
        print(f"  {kind:5s} flat   build {flat_figures['build_seconds']:.2f} s; batched top-1 "
              f"{flat_figures['batch_top1_qps']:,.0f} q/s, top-8 {flat_figures['batch_top8_qps']:,.0f} q/s; "
              f"one query per call {flat_figures['single_top8_qps']:,.1f} q/s")
        match = result["eval_match"]
        print(f"        EvalIndex.match, {match['batch']} per call: {match['qps']:,.0f} q/s")
        if "ivf" in result:
            ivf_figures = result["ivf"]
            probes = "; ".join(
                f"nprobe {key.removeprefix('nprobe_')}: {value['batch_top1_qps']:,.0f} q/s batched, "
                f"{value['single_top8_qps']:,.0f} single, recall {value['recall_at_1']:.3f}"
                for key, value in ivf_figures.items() if key.startswith("nprobe_"))
            print(f"        ivf{ivf_figures['nlist']} train {ivf_figures['train_seconds']:.1f} s + add "
                  f"{ivf_figures['add_seconds']:.1f} s; {probes}")
        pool = result["registry"]
        print(f"        per-sample registry (replaced; see benchmarks.dedup_pool) of {pool['size']:,}: "
              f"claim_image {pool['fill_claims_per_second']:,.0f}/s while "
              f"filling, at full size {pool['duplicate_claims_per_second']:,.0f}/s (duplicates) and "
              f"{pool['new_claims_per_second']:,.0f}/s (new)")
        print(f"        beside: one query per call on a flat index of that size {pool['bare_search_top8_qps']:,.0f}/s, "
              f"through IndexIDMap (as the registry) {pool['bare_idmap_search_top8_qps']:,.0f}/s; "
              f"claim_hash (SQLite alone) {pool['claim_hash_per_second']:,.0f}/s; "
              f"reopen {pool['reopen_seconds']:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
