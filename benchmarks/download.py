"""Downloader throughput: winnow's ``download`` CLI against img2dataset, on one local image server.

Two settings, each on both tools: ``datacomp`` (DataComp's download settings, 512 px
``keep_ratio_largest``, ``resize_only_if_bigger``, no EXIF, webdataset) and ``defaults``
(img2dataset's defaults on both sides: no resize, encode, hash or EXIF option given, so 256 px
``border``, EXIF extracted, sha256 computed, ``files`` output, 256 threads per process).

Both tools get the same pool: ``--rows`` URLs that cycle through ``--sources`` real-image JPEGs
(scikit-image photos and clip art from ``tests.infra.images``, every one larger than the 512 px
target) served by ``tests.infra.image_server.ImageServer`` on 127.0.0.1. Every row has its own
URL (``/img/<name>?i=<row>``; the server routes on the path only), so neither tool can dedupe.
Each tool runs as a subprocess with the same resize, encode, process, thread and shard settings;
its wall time, from start to exit, includes its own startup. images/s = successes (summed from
the tools' ``_stats.json``) / seconds. Runs alternate (winnow, img2dataset, winnow, ...); the
best of each tool is the headline. The CPU time of each tool's process tree is reported too:
on a shared machine it moves less than the wall time.

img2dataset lives in its own virtualenv (``~/.cache/winnow/img2dataset-venv``), created here with
``uv`` at pinned versions, so nothing leaks into the project's environment. Both tools write
bytecode to ``benchmarks/_data/pycache`` (and run once untimed to fill it), as a normal install
would have it.

Run from the repository root::

    .venv/bin/python -m benchmarks.download [--rows 6000] [--processes 2] [--threads 32] [--json out.json]
        [--settings datacomp defaults]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from winnow.shared.logs import configure_logging
from tests.infra.image_server import ImageServer
from tests.infra.images import make_jpeg_corpus, title_from_path
from tests.infra.tools import find_uv

log = structlog.get_logger("benchmarks.download")

BENCHMARKS_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCHMARKS_DIR / "_data"
# Shared with the parity tests (tests/downloader/test_img2dataset_parity.py), built once per machine.
IMG2DATASET_VENV = Path.home() / ".cache" / "winnow" / "img2dataset-venv"
PYCACHE_DIR = DATA_DIR / "pycache"
# img2dataset's newest release and the versions of its heavy dependencies it was checked with
# (numpy 2 and albumentations 1.4 work with it).
IMG2DATASET_REQUIREMENTS = (
    "img2dataset==1.47.0",
    "albumentations==1.4.24",
    "opencv-python-headless==4.14.0.94",
    "numpy==2.4.6",
)
IMG2DATASET_PYTHON = "3.11"
MIN_SUCCESS_RATE = 0.99
WINNOW = "winnow"
IMG2DATASET = "img2dataset"
DATACOMP_SETTINGS = "datacomp"  # DataComp's download settings on both tools
DEFAULT_SETTINGS = "defaults"  # img2dataset's defaults on both tools
SETTINGS = (DATACOMP_SETTINGS, DEFAULT_SETTINGS)


@dataclass(frozen=True)
class BenchmarkSettings:
    rows: int = 6000  # URLs in the pool
    sources: int = 500  # distinct source JPEGs the rows cycle through
    min_side: int = 800  # shorter side of every source, so every image is resized
    processes: int = 2
    threads: int = 32
    samples_per_shard: int = 500  # 12 shards by default: both processes stay busy to the end
    repeats: int = 2  # runs per tool, alternating
    image_size: int = 512


@dataclass
class RunResult:
    tool: str
    run: int
    seconds: float
    count: int
    successes: int
    requests_served: int
    cpu_seconds: float  # user + system time of the tool and all its processes
    server_cpu_seconds: float  # the image server's share, measured in this process
    failures: dict[str, int] = field(default_factory=dict)
    settings: str = DATACOMP_SETTINGS

    @property
    def images_per_second(self) -> float:
        return self.successes / self.seconds


class BenchmarkError(RuntimeError):
    """A tool failed, or produced too few images for its figure to mean anything."""


def ensure_img2dataset(venv: Path = IMG2DATASET_VENV) -> Path:
    """The img2dataset executable of the benchmark's own virtualenv, built on first use."""
    executable = venv / "bin" / "img2dataset"
    marker = venv / ".requirements"
    wanted = "\n".join(IMG2DATASET_REQUIREMENTS)
    if executable.exists() and marker.exists() and marker.read_text() == wanted:
        return executable
    uv = find_uv()
    if uv is None:
        raise BenchmarkError("uv is not on PATH nor in ~/.local/bin (scripts/setup.sh installs it); "
                             "it builds img2dataset's virtualenv")
    log.info("creating img2dataset virtualenv", venv=str(venv), requirements=list(IMG2DATASET_REQUIREMENTS))
    subprocess.run([uv, "venv", "--quiet", "--clear", "--python", IMG2DATASET_PYTHON, str(venv)], check=True)
    subprocess.run([uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
                    *IMG2DATASET_REQUIREMENTS], check=True)
    marker.write_text(wanted)
    return executable


def write_pool(path: Path, sources: list[Path], base_url: str, rows: int) -> None:
    """``rows`` rows of ``(url, text)`` cycling through ``sources``, each with a distinct URL."""
    names = [(p.name, title_from_path(p)) for p in sources]
    urls, texts = [], []
    for row in range(rows):
        name, title = names[row % len(names)]
        urls.append(f"{base_url}/img/{name}?i={row}")
        texts.append(title)
    pq.write_table(pa.table({"url": urls, "text": texts}), path)


def winnow_executable() -> Path:
    return Path(sys.executable).parent / WINNOW  # the project's venv runs this benchmark


def defaults_command(prefix: list[str], pool: Path, output: Path, settings: BenchmarkSettings) -> list[str]:
    """img2dataset's defaults: only the input, the output folder, processes and shard size are given."""
    return [*prefix, "--url_list", str(pool), "--input_format", "parquet", "--url_col", "url", "--caption_col", "text",
            "--output_folder", str(output), "--processes_count", str(settings.processes),
            "--number_sample_per_shard", str(settings.samples_per_shard)]


def winnow_command(pool: Path, output: Path, settings: BenchmarkSettings) -> list[str]:
    return [
        str(winnow_executable()), "download", "--output_format", "webdataset", "--extract_exif", "False",
        "--url_list", str(pool), "--input_format", "parquet", "--url_col", "url", "--caption_col", "text",
        "--output_folder", str(output),
        "--image_size", str(settings.image_size), "--resize_mode", "keep_ratio_largest", "--resize_only_if_bigger",
        "--encode_format", "jpg", "--encode_quality", "95",
        "--processes_count", str(settings.processes), "--thread_count", str(settings.threads),
        "--number_sample_per_shard", str(settings.samples_per_shard),
        "--allow_networks", "127.0.0.0/8", "--disable_progress",
    ]


def img2dataset_command(executable: Path, pool: Path, output: Path, settings: BenchmarkSettings) -> list[str]:
    return [
        str(executable),
        "--url_list", str(pool), "--input_format", "parquet", "--url_col", "url", "--caption_col", "text",
        "--output_format", "webdataset", "--output_folder", str(output),
        "--image_size", str(settings.image_size), "--resize_mode", "keep_ratio_largest",
        "--resize_only_if_bigger", "True",
        "--encode_format", "jpg", "--encode_quality", "95",
        "--processes_count", str(settings.processes), "--thread_count", str(settings.threads),
        "--number_sample_per_shard", str(settings.samples_per_shard),
        "--distributor", "multiprocessing", "--enable_wandb", "False", "--retries", "0",
        # winnow keeps no EXIF; reading it would be extra work on img2dataset's side only.
        "--extract_exif", "False",
    ]


def tool_environment() -> dict[str, str]:
    """The caller's environment without its virtualenv, proxies or update checks, with bytecode caching.

    Without cached bytecode every worker process compiles pandas, pyarrow and the rest from
    source (seconds each); users' installs have it, so both tools get it, in a folder of ours.
    """
    dropped = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE"}
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.lower().endswith("_proxy")}
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", NO_ALBUMENTATIONS_UPDATE="1",
               WANDB_MODE="disabled", WANDB_SILENT="true", PYTHONPYCACHEPREFIX=str(PYCACHE_DIR))
    return env


def warm_up(command: list[str]) -> None:
    """Run ``command`` once untimed, so its imports are compiled into the bytecode cache."""
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=tool_environment(), check=False)


def read_stats(stats_files: list[Path]) -> tuple[int, int, dict[str, int]]:
    """``(count, successes, failures per reason)`` summed over the shards' ``_stats.json``."""
    count = successes = 0
    failures: dict[str, int] = {}
    for path in stats_files:
        stats = json.loads(path.read_text())
        count += stats["count"]
        successes += stats["successes"]
        # winnow counts failure reasons in "reasons"; img2dataset's error messages are in "status_dict".
        reasons = stats.get("reasons") or {k: v for k, v in stats.get("status_dict", {}).items() if k != "success"}
        for reason, n in reasons.items():
            failures[reason] = failures.get(reason, 0) + n
    return count, successes, failures


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_tool(tool: str, command: list[str], output: Path, stats_glob: str, run: int, server: ImageServer,
             log_dir: Path, settings: str = DATACOMP_SETTINGS) -> RunResult:
    shutil.rmtree(output, ignore_errors=True)
    if output.exists():  # a leftover output would be resumed, not downloaded
        raise BenchmarkError(f"cannot remove the previous output {output}")
    server.reset_stats()
    log_path = log_dir / f"{settings}-{tool}-{run}.log"
    log.info("running", tool=tool, run=run, log=str(log_path))
    with log_path.open("wb") as log_file:
        children_before, server_before = _children_cpu_seconds(), time.process_time()
        start = time.perf_counter()
        completed = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT, env=tool_environment(),
                                   cwd=log_dir)
        seconds = time.perf_counter() - start
        cpu_seconds = _children_cpu_seconds() - children_before
        # While the tool runs, this process does nothing but serve images.
        server_cpu_seconds = time.process_time() - server_before
    if completed.returncode != 0:
        tail = log_path.read_text(errors="replace")[-4000:]
        raise BenchmarkError(f"{tool} exited with {completed.returncode}; its output ends with:\n{tail}")
    count, successes, failures = read_stats(sorted(output.glob(stats_glob)))
    result = RunResult(tool, run, seconds, count, successes, sum(server.hits.values()), cpu_seconds,
                       server_cpu_seconds, failures, settings)
    log.info("finished", tool=tool, run=run, seconds=round(seconds, 2), successes=successes, count=count,
             images_per_second=round(result.images_per_second, 1))
    return result


def check_result(result: RunResult, rows: int) -> None:
    if result.successes < MIN_SUCCESS_RATE * rows:
        raise BenchmarkError(
            f"{result.tool} run {result.run}: only {result.successes} of {rows} rows succeeded "
            f"({result.count} in its stats); failures by reason: {json.dumps(result.failures, indent=1)}")


def summarize(results: list[RunResult]) -> dict[str, dict[str, dict[str, float]]]:
    """Per settings, per tool: best and median images/s, median images per cpu-second."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for key in dict.fromkeys((r.settings, r.tool) for r in results):
        runs = [r for r in results if (r.settings, r.tool) == key]
        rates = [r.images_per_second for r in runs]
        summary.setdefault(key[0], {})[key[1]] = {
            "best_images_per_second": max(rates), "median_images_per_second": statistics.median(rates),
            "median_images_per_cpu_second": statistics.median(r.successes / r.cpu_seconds for r in runs),
            "runs": len(runs)}
    return summary


def report(results: list[RunResult], summary: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [f"{'settings':<9} {'tool':<12} {'run':>3} {'seconds':>8} {'ok':>6} {'requests':>8} {'img/s':>8} "
             f"{'tool cpu s':>10} {'server cpu s':>12} {'img/cpu s':>9}"]
    for r in results:
        lines.append(f"{r.settings:<9} {r.tool:<12} {r.run:>3} {r.seconds:>8.2f} {r.successes:>6} "
                     f"{r.requests_served:>8} {r.images_per_second:>8.1f} {r.cpu_seconds:>10.1f} "
                     f"{r.server_cpu_seconds:>12.1f} {r.successes / r.cpu_seconds:>9.1f}")
    for settings, tools in summary.items():
        if WINNOW in tools and IMG2DATASET in tools:
            ours, theirs = tools[WINNOW]["best_images_per_second"], tools[IMG2DATASET]["best_images_per_second"]
            lines.append(f"download ({settings}): winnow {ours:.1f} img/s, img2dataset {theirs:.1f} img/s, "
                         f"ratio {ours / theirs:.2f}x (best of {tools[WINNOW]['runs']} runs each)")
            ours, theirs = (tools[WINNOW]["median_images_per_cpu_second"],
                            tools[IMG2DATASET]["median_images_per_cpu_second"])
            lines.append(f"cpu ({settings}): winnow {ours:.1f} img per cpu-s, img2dataset {theirs:.1f} img per cpu-s, "
                         f"ratio {ours / theirs:.2f}x (median; the server's cpu not counted)")
        else:
            for tool, figures in tools.items():
                lines.append(f"download ({settings}): {tool} {figures['best_images_per_second']:.1f} img/s")
    return "\n".join(lines)


def run_benchmark(settings: BenchmarkSettings, tools: list[str], work_dir: Path,
                  profiles: tuple[str, ...] = SETTINGS) -> tuple[list[RunResult], dict]:
    corpus = make_jpeg_corpus(DATA_DIR / f"corpus-{settings.min_side}", settings.sources, min_side=settings.min_side)
    img2dataset = ensure_img2dataset() if IMG2DATASET in tools else None
    if WINNOW in tools and not winnow_executable().exists():
        raise BenchmarkError(f"no winnow executable next to {sys.executable}; install the project in this venv")
    log_dir = work_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    pool = work_dir / "pool.parquet"
    results: list[RunResult] = []
    if WINNOW in tools:
        warm_up([str(winnow_executable()), "download", "--help"])
    if img2dataset is not None:
        warm_up([str(img2dataset), "--help"])
    with ImageServer(corpus[0].parent) as server:
        server.preload()
        write_pool(pool, corpus, server.base_url, settings.rows)
        for profile in profiles:
            for run in range(1, settings.repeats + 1):
                for tool in tools:
                    output = work_dir / f"out-{tool}"
                    if tool == WINNOW:
                        command = (winnow_command(pool, output, settings) if profile == DATACOMP_SETTINGS else
                                   defaults_command([str(winnow_executable()), "download", "--allow_networks",
                                                     "127.0.0.0/8", "--disable_progress"], pool, output, settings))
                        stats_glob = "*_stats.json"  # winnow download writes img2dataset's layout
                    else:
                        command = (img2dataset_command(img2dataset, pool, output, settings)
                                   if profile == DATACOMP_SETTINGS else
                                   defaults_command([str(img2dataset)], pool, output, settings))
                        stats_glob = "*_stats.json"
                    result = run_tool(tool, command, output, stats_glob, run, server, log_dir, profile)
                    check_result(result, settings.rows)
                    results.append(result)
                    shutil.rmtree(output, ignore_errors=True)
    return results, summarize(results)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = BenchmarkSettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=defaults.rows, help="URLs in the pool (>= 5000 for a report)")
    parser.add_argument("--sources", type=int, default=defaults.sources, help="distinct source JPEGs")
    parser.add_argument("--processes", type=int, default=defaults.processes)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--samples-per-shard", type=int, default=defaults.samples_per_shard)
    parser.add_argument("--repeats", type=int, default=defaults.repeats, help="runs per tool, alternating")
    parser.add_argument("--tools", nargs="+", choices=[WINNOW, IMG2DATASET], default=[WINNOW, IMG2DATASET])
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS),
                        help="datacomp: DataComp's download settings on both; defaults: img2dataset's defaults on both")
    parser.add_argument("--work-dir", type=Path, help="pool, outputs and logs (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(json_format=False)
    settings = BenchmarkSettings(rows=args.rows, sources=args.sources, processes=args.processes,
                                 threads=args.threads, samples_per_shard=args.samples_per_shard, repeats=args.repeats)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="winnow-bench-download-"))
    try:
        results, summary = run_benchmark(settings, args.tools, work_dir, tuple(args.settings))
    except BenchmarkError as exc:
        log.error("benchmark failed", error=str(exc), work_dir=str(work_dir))
        return 1
    if args.work_dir is None:
        shutil.rmtree(work_dir, ignore_errors=True)
    print(report(results, summary))
    if args.json:
        figures = {"settings": asdict(settings), "summary": summary,
                   "runs": [{**asdict(r), "images_per_second": r.images_per_second} for r in results]}
        figures["ratio"] = {name: tools[WINNOW]["best_images_per_second"] / tools[IMG2DATASET]["best_images_per_second"]
                            for name, tools in summary.items() if WINNOW in tools and IMG2DATASET in tools}
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
