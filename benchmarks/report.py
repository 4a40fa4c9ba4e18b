"""The curation report of a job of a million samples: time to build it, page size, and how fast
the page is in headless Chromium (load until the charts are drawn, one uid lookup).

    .venv/bin/python -m benchmarks.report                       # 1,000,000 samples in 100 shards
    .venv/bin/python -m benchmarks.report --samples 200000 --json out.json

The job is synthetic but has winnow's layout: a downloader stage (5% failed downloads over 500
domains) and a safety stage (2% dropped, scores for every kept sample), ledgers of every row, and
tars with a small real JPEG per kept sample in the shards the report samples thumbnails from.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from winnow.report.cli import build_report
from winnow.report.collect import _pick_shards
from winnow.shared.jobs import JobManifest


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=70)
    return out.getvalue()


def make_job(root: Path, samples: int, shards: int, sampled_shards: int) -> Path:
    rng = np.random.default_rng(0)
    per_shard = samples // shards
    manifest = JobManifest(job_id="bench", job_root=str(root), pool_uri="synthetic", shard_count=shards,
                           sample_count=per_shard * shards, samples_per_shard=per_shard, created=time.time())
    root.mkdir(parents=True)
    manifest.save()
    images = [_jpeg(i) for i in range(16)]
    with_images = set(_pick_shards(np.arange(shards), sampled_shards))
    for shard in range(shards):
        n = per_shard
        uids = [f"{x:032x}" for x in rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) * 7919]
        keys = [f"{shard:08d}{i:05d}" for i in range(n)]
        failed = rng.random(n) < 0.05
        toxicity = rng.beta(1, 12, n)
        toxic = ~failed & (toxicity >= 0.5)
        status_dl = np.where(failed, "failed_to_download", "success")
        reason_dl = np.where(failed, rng.choice(["http_404", "timeout", "connection_error"], n), None)
        urls = [f"http://img{d}.example.com/{k}.jpg" for d, k in zip(rng.integers(0, 500, n), keys)]
        base = {"key": keys, "uid": uids, "url": urls, "text": [f"a photo of thing {i}" for i in range(n)],
                "original_width": rng.integers(100, 1200, n), "original_height": rng.integers(100, 1200, n)}
        for stage, table in (
            ("downloader", pa.table({**base, "status": status_dl, "reason": reason_dl,
                                     "dropped_by": pa.nulls(n, pa.string())})),
            ("safety", pa.table({**base, "status": np.where(toxic, "dropped", status_dl),
                                 "reason": np.where(toxic, "toxic_caption", reason_dl),
                                 "dropped_by": np.where(toxic, "safety", None),
                                 "toxicity_score": np.where(failed, np.nan, toxicity)})),
        ):
            folder = root / stage
            folder.mkdir(exist_ok=True)
            pq.write_table(table, folder / f"{shard:08d}.parquet")
            kept = table.filter(pa.compute.equal(table["status"], "success"))
            if shard in with_images:
                with tarfile.open(folder / f"{shard:08d}.tar", "w") as tar:
                    for i, key in enumerate(kept["key"].to_pylist()):
                        data = images[i % len(images)]
                        info = tarfile.TarInfo(f"{key}.jpg")
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
            statuses = table["status"].to_pylist()
            reasons = [r for r in table["reason"].to_pylist() if r]
            stats = {"schema_version": 1, "stage": stage, "job_id": "bench", "shard_id": shard, "count": n,
                     "successes": statuses.count("success"), "status_dict": {s: statuses.count(s) for s in set(statuses)},
                     "reasons": {r: reasons.count(r) for r in set(reasons)}, "start_time": 1000.0 + shard + (stage == "safety"),
                     "end_time": 1001.0 + shard + (stage == "safety")}
            if stage == "safety":
                stats["thresholds"] = {"toxicity_score": 0.5}
            (folder / f"{shard:08d}_stats.json").write_text(json.dumps(stats))
    return root


def browse(page_path: Path, uid: str) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                             args=["--headless", "--no-sandbox", "--disable-gpu",
                                                   "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        started = time.perf_counter()
        page.goto(page_path.as_uri())
        page.wait_for_selector("#plot-hist-toxicity_score .main-svg")
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        page.fill("#uid-input", uid)
        page.click("#uid-button")
        verdict = page.locator("#uid-verdict").inner_text()
        lookup = time.perf_counter() - started
        browser.close()
    return {"load_seconds": round(loaded, 2), "lookup_seconds": round(lookup, 3), "verdict": verdict}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=100)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="winnow-bench-report-"))
    try:
        started = time.perf_counter()
        job = make_job(work / "job", args.samples, args.shards, 16)
        made = time.perf_counter() - started
        out = work / "report.html"
        cold = build_report(str(job), str(out), cache_dir=str(work / "cache"))
        warm = build_report(str(job), str(out), cache_dir=str(work / "cache"))
        last = pq.read_table(job / "safety" / "00000000.parquet").to_pylist()
        dropped = next(r["uid"] for r in last if r["dropped_by"] == "safety")
        figures = {"samples": cold["samples"], "job_seconds": round(made, 1), "report_seconds_cold": cold["seconds"],
                   "report_seconds_cached_thumbnails": warm["seconds"], "page_mb": round(cold["bytes"] / 1e6, 1),
                   "thumbnails": cold["thumbnails"], **browse(out, dropped)}
        print(json.dumps(figures, indent=1))
        if args.json:
            args.json.write_text(json.dumps(figures, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
