"""``winnow run`` with every stage on a pool of distinct real images: per-stage and end-to-end cost.

The pool: ``--samples`` distinct real images at web sizes (``tests.infra.images.make_web_corpus``:
openclipart drawings and scikit-image photos, cropped, mirrored, scaled to 300-1,600 px on the
longest side, recompressed as JPEG at quality 60-95 or as PNG; captions from their subjects and
titles), cached under ``benchmarks/_data/``, checked to hold no two identical files, served by
the tests' image server (``tests.infra.image_server``) on 127.0.0.1. ``winnow run`` runs as a
subprocess, as a user runs it, with every stage (download safety dedup blur embed, the offline
models, embed with ViT-B-32 at random weights: its cost, not its scores, matters here) and a
filter with its reshard (``--filter``, CLIP-score top 30 % on the B/32 scores by default).

What the figures mean:

- **samples/s** of a stage: the rows it handled (its shards' ``count``) over its busy time, the
  time during which at least one of its shards was being processed (the union of the shards'
  ``start_time``..``end_time`` in their ``_stats.json``). Stages run at once in ``winnow run``
  (``--workers`` threads each, shards flowing through), so a stage's busy time overlaps the
  others' and its rate is what it reached sharing the CPUs with them. The span (first start to
  last end) is printed too. End to end: pool rows over the process's wall time, start to exit.
- **CPU-s per sample** of a stage: CPU time of the threads working for that stage, less its
  ``setup`` (model loading, printed apart), over its rows. The subprocess is started through
  ``benchmarks.stage_threads``, which gives each stage's worker threads the stage's OS thread
  name; threads they start (fetch pools, torch's OpenMP pool, onnxruntime's pools opened in
  ``setup``) inherit it. This process reads every thread's ``utime + stime`` from
  ``/proc/PID/task/*/stat`` every ``--sample-interval`` s and adds each thread's increase to the
  group its name belongs to then. ``winnow-run`` is the runner's main loop, ``filter`` the
  filter and reshard, ``python`` start-up and job preparation. CPU of a thread that exited
  since the last reading is lost to the groups; it is printed as ``unattributed`` (the process
  total, from ``wait4``, less the groups' sum). End to end: the process's total CPU over rows.
- **bytes written**: the sizes of every file under ``JOB/<stage>/`` once the run is over.
  "curation copies" is safety + dedup + blur over the image bytes in the downloader's tars.
- **peak RSS**: the process's own ``VmHWM`` from ``/proc/PID/status``, read while it runs (not
  ``wait4``'s ``ru_maxrss``, which carries the parent's high-water mark across fork and exec).
  One process holds every stage, so a stage's own figure is the resident memory its ``setup``
  added (its models).
- **inside the stage**: ``decode_s``, ``model_s``, ``write_s`` summed from the stage's
  ``_stats.json`` where it records them, and the share of its shards' time outside the models.
- **resumed runs**: the figures so far are written to ``WORK/measured.json`` every 10 s.
  ``--resume`` serves the pool again on the same port and runs the same ``winnow run``, which
  skips the shards already finished; wall time, CPU and thread groups are the segments' sums
  (CPU since the last checkpoint of a segment cut short is lost), a stage's setup counts once
  per segment, peak RSS is the highest.

The image server runs in this process; its CPU (this process's, sampler included) is printed.

    .venv/bin/python -m benchmarks.pipeline                      # 5,000 samples
    .venv/bin/python -m benchmarks.pipeline --samples 50000      # the large pool (making its images takes 30-80 min once, by load)
    .venv/bin/python -m benchmarks.pipeline --samples 50000 --stages download dedup --filter none   # dedup alone at scale
    .venv/bin/python -m benchmarks.pipeline --samples 200 --keep --json p.json
    # a run longer than the machine stays up: name its folder, and go on with it later
    .venv/bin/python -m benchmarks.pipeline --samples 50000 --work-dir runs/bench-50k
    .venv/bin/python -m benchmarks.pipeline --samples 50000 --work-dir runs/bench-50k --resume
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.stage_threads import SETUP_LOG_ENV
from winnow.shared.topics import CURATION_STAGES
from tests.infra.image_server import ImageServer
from tests.infra.images import make_web_corpus
from tests.infra.process_memory import high_water_mark

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO / "benchmarks" / "_data"
LOOPBACK = "127.0.0.1/32"  # what `winnow run --example` allows for its own server
CURATION_COPIES = ("safety", "dedup", "blur")  # the stages that copied the downloader's tars before issue 11
TIMING_FIELDS = ("read_s", "decode_s", "model_s", "write_s")  # _stats.json's "timings" (winnow.shared.curation)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
TICKS = os.sysconf("SC_CLK_TCK")
MEASURED = "measured.json"  # the work dir's figures so far, for --resume


class BenchmarkError(RuntimeError):
    """The run failed, or left too little behind for its figures to mean anything."""


@dataclass
class StageFigures:
    stage: str
    shards: int = 0
    samples: int = 0  # rows the stage handled (its shards' count)
    kept: int = 0  # of them, successes
    busy_s: float = 0.0  # union of its shards' processing intervals
    span_s: float = 0.0  # first shard's start to last shard's end
    cpu_s: float = 0.0  # its threads' CPU, setup included
    setup_wall_s: float = 0.0
    setup_cpu_s: float = 0.0
    setup_rss_bytes: int = 0  # resident memory its setup added
    bytes_written: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # decode_s, model_s, write_s where recorded
    shard_time_s: float = 0.0  # sum of its shards' durations

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.busy_s if self.busy_s else 0.0

    @property
    def cpu_per_sample(self) -> float:
        return (self.cpu_s - self.setup_cpu_s) / self.samples if self.samples else 0.0

    @property
    def outside_models(self) -> float | None:
        if "model_s" not in self.timings or not self.shard_time_s:
            return None
        return 1 - self.timings["model_s"] / self.shard_time_s


@dataclass
class RunFigures:
    samples: int
    samples_per_shard: int
    workers: int
    wall_s: float = 0.0
    cpu_s: float = 0.0  # the whole process (wait4)
    peak_rss_bytes: int = 0
    bytes_written: int = 0  # everything under the job directory
    downloaded_image_bytes: int = 0  # image members of the downloader's tars
    pool_image_bytes: int = 0  # the files the server holds for the pool
    server_cpu_s: float = 0.0
    cpu_by_thread: dict[str, float] = field(default_factory=dict)  # thread-name groups, CPU seconds
    unattributed_cpu_s: float = 0.0
    stage_names: list[str] = field(default_factory=list)  # winnow run's --stages
    stages: list[StageFigures] = field(default_factory=list)
    other_bytes: dict[str, int] = field(default_factory=dict)  # job folders that are not a curation stage
    segments: int = 1  # runs of winnow that did the job: more than 1 when resumed (--resume)

    @property
    def curation_copies(self) -> float:
        written = sum(s.bytes_written for s in self.stages if s.stage in CURATION_COPIES)
        return written / self.downloaded_image_bytes if self.downloaded_image_bytes else 0.0


# -- the pool ---------------------------------------------------------------------------------------

def build_pool(samples: int, seed: int) -> tuple[Path, list[tuple[Path, str]]]:
    corpus_dir = DATA_DIR / f"web-corpus-{seed}"
    started = time.perf_counter()
    corpus = make_web_corpus(corpus_dir, samples, seed=seed, processes=os.cpu_count() or 1)
    digests = Counter(hashlib.sha256(path.read_bytes()).hexdigest() for path, _ in corpus)
    repeated = [d for d, n in digests.items() if n > 1]
    if repeated:
        raise BenchmarkError(f"the corpus in {corpus_dir} holds {len(repeated)} files more than once")
    print(f"pool: {samples} distinct images ({sum(p.stat().st_size for p, _ in corpus) / 2**20:.0f} MiB) "
          f"in {corpus_dir}, ready in {time.perf_counter() - started:.0f} s", flush=True)
    return corpus_dir, corpus


def write_pool(path: Path, corpus: list[tuple[Path, str]], server: ImageServer) -> None:
    pq.write_table(pa.table({"url": [server.img_url(p.name) for p, _ in corpus],
                             "text": [caption for _, caption in corpus]}), path)


# -- the run and its sampler --------------------------------------------------------------------------

def stage_folders(stages: list[str]) -> list[str]:
    """The job folders of the ``--stages`` run, in pipeline order (``download`` writes ``downloader``)."""
    return [stage for stage in CURATION_STAGES if (stage if stage != CURATION_STAGES[0] else "download") in stages]


def winnow_command(pool: Path, job: Path, args: argparse.Namespace) -> list[str]:
    command = [sys.executable, "-m", "benchmarks.stage_threads", "run", str(pool), "--out", str(job), "--no_progress",
               "--stages", *args.stages, *(["--clip_model", f"b32={args.clip_arch}"] if "embed" in args.stages else []),
               "--samples_per_shard", str(args.samples_per_shard), "--workers", str(args.workers),
               "--allow_networks", LOOPBACK, "--filter", args.filter]
    if args.filter in ("clip_score", "laion2b"):
        command += ["--arch", "b32"] + (["--fraction", "0.3"] if args.filter == "clip_score" else [])
    if args.model_threads is not None:
        command += ["--model_threads", str(args.model_threads)]
    return command


def _thread_times(pid: int) -> dict[int, tuple[str, int]]:
    """``{tid: (OS name, utime + stime in ticks)}`` of every live thread of ``pid``."""
    found = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue  # exited since the listing
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        found[int(tid)] = (name, int(fields[11]) + int(fields[12]))  # utime, stime: fields 14 and 15
    return found




@dataclass
class Finished:
    returncode: int | None  # None: still running (a checkpoint), or killed with its sampler
    wall_s: float
    cpu_s: float
    peak_rss_bytes: int
    cpu_by_thread: dict[str, float]


def _process_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` so far, exited threads and reaped children included."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return sum(int(v) for v in fields[11:15]) / TICKS  # utime, stime, cutime, cstime: fields 14 to 17


def run_measured(command: list[str], env: dict[str, str], log_path: Path, interval: float, timeout: float,
                 checkpoint: Callable[[Finished], None] = lambda figures: None,
                 checkpoint_every: float = 10.0) -> Finished:
    """Run ``command``, reading its threads' CPU and its VmHWM every ``interval`` s until it exits.

    ``checkpoint`` gets the figures so far every ``checkpoint_every`` s, so that a run whose
    machine goes away can be resumed with what it had measured (``--resume``).
    """
    import subprocess

    with log_path.open("ab") as log:
        started = last_checkpoint = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        last: dict[int, int] = {}
        by_name: Counter = Counter()
        peak = 0

        def so_far(returncode: int | None, cpu_s: float) -> Finished:
            return Finished(returncode, time.perf_counter() - started, cpu_s, peak,
                            {name: ticks / TICKS for name, ticks in by_name.items()})

        while True:
            peak = max(peak, high_water_mark(process.pid))
            for tid, (name, ticks) in _thread_times(process.pid).items():
                by_name[name] += ticks - last.get(tid, 0)
                last[tid] = ticks
            if time.perf_counter() - last_checkpoint >= checkpoint_every:
                checkpoint(so_far(None, _process_cpu_s(process.pid)))
                last_checkpoint = time.perf_counter()
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - started > timeout:
                os.kill(process.pid, signal.SIGKILL)
                os.wait4(process.pid, 0)
                raise BenchmarkError(f"winnow ran past {timeout:.0f} s; its log: {log_path}")
            time.sleep(interval)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return so_far(process.returncode, usage.ru_utime + usage.ru_stime)


def combined(segments: list[Finished]) -> Finished:
    """One run measured in several segments (resumed after its machine went away): sums, and the highest peak."""
    by_name: Counter = Counter()
    for segment in segments:
        by_name.update(segment.cpu_by_thread)
    return Finished(segments[-1].returncode, sum(s.wall_s for s in segments), sum(s.cpu_s for s in segments),
                    max(s.peak_rss_bytes for s in segments), dict(by_name))


# -- reading the job ---------------------------------------------------------------------------------

def _union_seconds(intervals: list[tuple[float, float]]) -> float:
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def image_bytes_in_tars(folder: Path) -> int:
    total = 0
    for path in folder.glob("*.tar"):
        with tarfile.open(path) as tar:
            total += sum(m.size for m in tar if m.isfile() and m.name.lower().endswith(IMAGE_SUFFIXES))
    return total


def stage_figures(job_root: Path, stage: str) -> StageFigures:
    figures = StageFigures(stage)
    intervals = []
    for path in sorted((job_root / stage).glob("*_stats.json")):
        stats = json.loads(path.read_text())
        figures.shards += 1
        figures.samples += stats["count"]
        figures.kept += stats["successes"]
        intervals.append((stats["start_time"], stats["end_time"]))
        figures.shard_time_s += stats["end_time"] - stats["start_time"]
        recorded = stats.get("timings") or {}
        for name in TIMING_FIELDS:
            if name in recorded:
                figures.timings[name] = figures.timings.get(name, 0.0) + recorded[name]
    if intervals:
        figures.busy_s = _union_seconds(intervals)
        figures.span_s = max(e for _, e in intervals) - min(s for s, _ in intervals)
    figures.bytes_written = folder_bytes(job_root / stage) if (job_root / stage).exists() else 0
    return figures


def job_root_of(out: Path) -> Path:
    """The job's folder: ``--out`` itself, or the one folder under it that holds the downloader's shards."""
    if (out / CURATION_STAGES[0]).is_dir():
        return out
    found = [p.parent for p in out.glob(f"*/{CURATION_STAGES[0]}")]
    if len(found) != 1:
        raise BenchmarkError(f"cannot tell the job's folder under {out}: {found}")
    return found[0]


def read_setups(path: Path) -> dict[str, dict]:
    """Each stage's setup: wall and CPU seconds summed over the run's segments, the memory it added."""
    setups: dict[str, dict] = {}
    for record in map(json.loads, path.read_text().splitlines() if path.exists() else []):
        setup = setups.setdefault(record["stage"], {"wall_s": 0.0, "cpu_s": 0.0, "rss_added": 0})
        setup["wall_s"] += record["wall_s"]
        setup["cpu_s"] += record["cpu_s"]
        setup["rss_added"] = max(setup["rss_added"], record["rss_after"] - record["rss_before"])
    return setups


# -- the benchmark -------------------------------------------------------------------------------------

RESUMED_ARGS = ("samples", "samples_per_shard", "workers", "model_threads", "filter", "clip_arch", "stages", "seed")


def _earlier_segments(work: Path, args: argparse.Namespace) -> tuple[list[Finished], int]:
    """What the run in ``work`` measured before its machine went away, and its image server's port."""
    path = work / MEASURED
    if not path.exists():
        raise BenchmarkError(f"nothing to resume in {work}: no {MEASURED} (a run started without --work-dir?)")
    record = json.loads(path.read_text())
    differs = [f"--{name.replace('_', '-')} {record['args'][name]} (now {getattr(args, name)})"
               for name in RESUMED_ARGS if record["args"][name] != getattr(args, name)]
    if differs:
        raise BenchmarkError(f"the run in {work} was started with other options: {', '.join(differs)}")
    return [Finished(**segment) for segment in record["segments"]], record["port"]


def run_benchmark(args: argparse.Namespace, work: Path) -> RunFigures:
    corpus_dir, corpus = build_pool(args.samples, args.seed)
    pool, job, setup_log, log_path = work / "pool.parquet", work / "job", work / "setups.jsonl", work / "winnow.log"
    earlier, port = _earlier_segments(work, args) if args.resume else ([], 0)
    if not args.resume:
        shutil.rmtree(job, ignore_errors=True)
        for path in (setup_log, log_path, work / MEASURED):
            path.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", COLUMNS="160",
               **{SETUP_LOG_ENV: str(setup_log)})
    with ImageServer(corpus_dir, port=port) as server:  # the pool's URLs name the first segment's port
        server.preload()
        if not args.resume:
            write_pool(pool, corpus, server)
        command = winnow_command(pool, job, args)
        print(f"{'resuming' if earlier else 'running'}: {' '.join(command[1:])}", flush=True)
        server_cpu = time.process_time()

        def checkpoint(now: Finished) -> None:
            record = {"args": {name: getattr(args, name) for name in RESUMED_ARGS}, "port": server.port,
                      "segments": [asdict(segment) for segment in [*earlier, now]]}
            (work / f"{MEASURED}.tmp").write_text(json.dumps(record))
            (work / f"{MEASURED}.tmp").replace(work / MEASURED)

        finished = run_measured(command, env, log_path, args.sample_interval, args.timeout, checkpoint)
        checkpoint(finished)
        server_cpu = time.process_time() - server_cpu
    segments = len(earlier) + 1
    finished = combined([*earlier, finished])
    if finished.returncode != 0:
        raise BenchmarkError(f"winnow exited with {finished.returncode}; its output ends with:\n"
                             f"{log_path.read_text(errors='replace')[-4000:]}")
    job_root = job_root_of(job)
    figures = RunFigures(args.samples, args.samples_per_shard, args.workers, stage_names=list(args.stages),
                         wall_s=finished.wall_s, segments=segments,
                         cpu_s=finished.cpu_s, peak_rss_bytes=finished.peak_rss_bytes,
                         bytes_written=folder_bytes(job), server_cpu_s=server_cpu,
                         pool_image_bytes=sum(p.stat().st_size for p, _ in corpus),
                         cpu_by_thread=dict(sorted(finished.cpu_by_thread.items(), key=lambda kv: -kv[1])))
    figures.downloaded_image_bytes = image_bytes_in_tars(job_root / CURATION_STAGES[0])
    setups = read_setups(setup_log)
    for stage in stage_folders(args.stages):
        stage_figs = stage_figures(job_root, stage)
        stage_figs.cpu_s = finished.cpu_by_thread.get(stage[:15], 0.0)
        if stage in setups:
            setup = setups[stage]
            stage_figs.setup_wall_s, stage_figs.setup_cpu_s = setup["wall_s"], setup["cpu_s"]
            stage_figs.setup_rss_bytes = setup["rss_added"]
        figures.stages.append(stage_figs)
    figures.other_bytes = {p.name: folder_bytes(p) for p in sorted(job_root.iterdir())
                           if p.is_dir() and p.name not in CURATION_STAGES}
    figures.unattributed_cpu_s = max(0.0, finished.cpu_s - sum(finished.cpu_by_thread.values()))
    if figures.stages[0].kept < 0.95 * args.samples:
        raise BenchmarkError(f"only {figures.stages[0].kept} of {args.samples} images were downloaded; "
                             f"see {job_root / CURATION_STAGES[0]}/*_stats.json")
    return figures


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def report(figures: RunFigures) -> str:
    lines = [f"winnow run --stages {' '.join(figures.stage_names)}, {figures.samples:,} samples in shards of "
             f"{figures.samples_per_shard:,}, {figures.workers} workers per stage",
             f"{'stage':<11}{'rows':>7}{'kept':>7}{'busy s':>8}{'span s':>8}{'rows/s':>8}{'cpu ms/row':>11}"
             f"{'setup s':>8}{'setup cpu s':>12}{'model MiB':>10}{'written MiB':>12}{'KiB/row':>8}"]
    for s in figures.stages:
        lines.append(f"{s.stage:<11}{s.samples:>7,}{s.kept:>7,}{s.busy_s:>8.1f}{s.span_s:>8.1f}{s.samples_per_s:>8.1f}"
                     f"{1000 * s.cpu_per_sample:>11.1f}{s.setup_wall_s:>8.1f}{s.setup_cpu_s:>12.1f}"
                     f"{_mib(s.setup_rss_bytes):>10}{_mib(s.bytes_written):>12}"
                     f"{s.bytes_written / max(s.samples, 1) / 1024:>8.1f}")
    for name, size in figures.other_bytes.items():
        lines.append(f"{name:<11}{'':>82}{_mib(size):>12}")
    lines.append(f"{'end to end':<11}{figures.samples:>7,}{'':>7}{figures.wall_s:>8.1f}{'':>8}"
                 f"{figures.samples / figures.wall_s:>8.1f}{1000 * figures.cpu_s / figures.samples:>11.1f}"
                 f"{'':>30}{_mib(figures.bytes_written):>12}{figures.bytes_written / figures.samples / 1024:>8.1f}")
    lines.append(f"peak RSS {_mib(figures.peak_rss_bytes)} MiB; CPU {figures.cpu_s:,.1f} s in all "
                 f"({figures.cpu_s / figures.wall_s:.2f} cores on average); image server {figures.server_cpu_s:.1f} "
                 f"CPU s (not counted above)")
    if figures.segments > 1:
        lines.append(f"measured in {figures.segments} segments (resumed with --resume after the machine went away): "
                     "wall and CPU are their sums, shards cut short were done again and their CPU counted, "
                     "the image server's CPU is the last segment's")
    groups = ", ".join(f"{name} {cpu:,.1f}" for name, cpu in figures.cpu_by_thread.items() if cpu >= 0.05)
    lines.append(f"CPU s by thread name: {groups}; unattributed (exited threads) {figures.unattributed_cpu_s:.1f}")
    copied = sum(s.bytes_written for s in figures.stages if s.stage in CURATION_COPIES)
    lines.append(f"curation copies: {' + '.join(CURATION_COPIES)} wrote {_mib(copied)} MiB = "
                 f"{100 * figures.curation_copies:.0f} % of the {_mib(figures.downloaded_image_bytes)} MiB of images "
                 f"in the downloader's tars (the pool's files: {_mib(figures.pool_image_bytes)} MiB)")
    timed = [s for s in figures.stages if s.timings]
    if not timed:
        lines.append(f"inside the stages: no stage records {', '.join(TIMING_FIELDS)} in its _stats.json")
    for s in timed:
        parts = ", ".join(f"{name} {s.timings[name]:.1f}" for name in TIMING_FIELDS if name in s.timings)
        outside = s.outside_models
        share = "" if outside is None else f", outside the models {100 * outside:.0f} % of {s.shard_time_s:.1f} shard-s"
        lines.append(f"inside {s.stage}: {parts}{share}")
    return "\n".join(lines)


def as_json(figures: RunFigures) -> dict:
    data = asdict(figures)
    data["curation_copies"] = figures.curation_copies
    for stage, raw in zip(figures.stages, data["stages"]):
        raw.update(samples_per_s=stage.samples_per_s, cpu_per_sample=stage.cpu_per_sample,
                   outside_models=stage.outside_models)
    data["end_to_end"] = {"samples_per_s": figures.samples / figures.wall_s,
                          "cpu_per_sample": figures.cpu_s / figures.samples}
    return data


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=5000, help="pool size (5000; 50000 for the large run)")
    parser.add_argument("--samples-per-shard", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2, help="winnow run's --workers: shards at once per stage")
    parser.add_argument("--model-threads", type=int, help="winnow run's --model_threads (default: winnow's; 0: the "
                                                          "libraries' own)")
    parser.add_argument("--filter", default="clip_score", help="winnow run's --filter (clip_score: top 30 %% on b32)")
    parser.add_argument("--clip-arch", default="ViT-B-32", help="embed's CLIP, random weights")
    parser.add_argument("--stages", nargs="+", default=["download", *CURATION_STAGES[1:]],
                        help="winnow run's --stages (all by default; 'download dedup' measures dedup alone at scale)")
    parser.add_argument("--seed", type=int, default=0, help="the image corpus's seed")
    parser.add_argument("--sample-interval", type=float, default=0.2, help="seconds between /proc readings")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds before winnow is killed")
    parser.add_argument("--work-dir", type=Path, help="pool, job and log (default: a temporary folder)")
    parser.add_argument("--resume", action="store_true",
                        help="go on with the run in --work-dir whose machine went away: winnow skips the shards "
                             "it finished, and the figures add up both parts")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (the job, its log)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.resume and not args.work_dir:
        parser.error("--resume goes on with the run in --work-dir: name it")
    if "embed" not in args.stages and args.filter in ("clip_score", "laion2b"):
        parser.error(f"--filter {args.filter} ranks by CLIP scores: add embed to --stages, or --filter none")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="winnow-bench-pipeline-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        figures = run_benchmark(args, work)
    except BenchmarkError as exc:
        print(f"benchmark failed: {exc}\nwork dir: {work}", file=sys.stderr)
        return 1
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(as_json(figures), indent=2) + "\n")
    if args.keep or args.work_dir:
        print(f"work dir: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
