"""``winnow report JOB --out report.html``: what each stage kept and dropped, and why, in a page.

    winnow report runs/example --out runs/example/report.html
    winnow report s3://winnow/runs/<job id> --out report.html     # credentials from AWS_*

The page is one file (plotly.js, thumbnails and data inline) that opens offline: the funnel, the
filter's criteria, a grid of sampled thumbnails per drop reason and of kept samples, score
histograms with their thresholds, download failures by reason and domain, and a uid lookup.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from rich.console import Console

from winnow.shared import storage

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("report", help="a curation report of a job, as one offline HTML page",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", help="a job folder or s3:// job root (the --out of winnow run, download, submit)")
    parser.add_argument("--out", required=True, help="the HTML file to write (any fsspec URI)")
    parser.add_argument("--per_reason", type=int, default=24, help="thumbnails per drop reason (and of kept samples)")
    parser.add_argument("--max_shards", type=int, default=16, help="shards the thumbnails are drawn from, at most")
    parser.add_argument("--thumbnail_size", type=int, default=160, help="longer side of a thumbnail, in pixels")
    parser.add_argument("--cache_dir", default=None,
                        help="where thumbnails are cached (default ~/.cache/winnow/report-thumbnails/JOB_ID)")
    parser.set_defaults(func=report_command)
    return parser


def build_report(job: str, out: str, *, per_reason: int = 24, max_shards: int = 16, thumbnail_size: int = 160,
                 cache_dir: str | None = None) -> dict:
    """Write the report page for ``job`` to ``out``; returns what went in it."""
    from winnow.report.collect import collect
    from winnow.report.page import render
    from winnow.report.thumbnails import default_cache_dir, thumbnails

    if per_reason < 0 or max_shards < 1 or thumbnail_size < 16:
        raise ValueError("--per_reason must be >= 0, --max_shards >= 1 and --thumbnail_size >= 16")
    started = time.perf_counter()
    facts = collect(job, per_reason=per_reason, max_shards=max_shards)
    rows = [(o.stage, row) for o in facts.outcomes.values() for row in o.rows]
    cache = Path(cache_dir) if cache_dir else default_cache_dir(facts.manifest.job_id)
    thumbs = thumbnails(job, rows, facts.stages, cache, thumbnail_size)
    page = render(facts, thumbs)
    storage.write_text(out, page)
    summary = {"out": out, "bytes": len(page.encode()), "samples": facts.total_samples, "thumbnails": len(thumbs),
               "outcomes": len(facts.outcomes), "seconds": round(time.perf_counter() - started, 2)}
    log.info("report written", extra=summary)
    return summary


def report_command(args: argparse.Namespace) -> int:
    summary = build_report(args.job, args.out, per_reason=args.per_reason, max_shards=args.max_shards,
                           thumbnail_size=args.thumbnail_size, cache_dir=args.cache_dir)
    Console().print(f"report of {summary['samples']:,} samples ({summary['outcomes']} outcomes, "
                    f"{summary['thumbnails']} thumbnails, {summary['bytes'] / 1e6:.1f} MB) in {summary['seconds']}s "
                    f"-> {summary['out']}")
    return 0
