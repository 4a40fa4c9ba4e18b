"""CLIP training throughput: ``winnow train`` against open_clip's own training script, in one run.

Both sides train the same scale on the same shards with the same open_clip arguments:

* winnow: ``python -m winnow.services.trainer.train --scale ... --data_dir ...`` (what ``winnow train``
  and torchrun run), which builds the argument list from the scale and calls
  ``open_clip_train.main.main`` in process;
* open_clip: ``python -m open_clip_train.main ARGS`` with ARGS the very list winnow builds
  (``winnow.services.trainer.train.open_clip_arguments``), only ``--name`` differing. winnow's small
  architectures are added to open_clip's model registry first (``register_winnow_configs``),
  since open_clip's script cannot find them otherwise; nothing else is changed.

The data: 256 openclipart images with their titles (``tests/trainer/data.py``), 64 px JPEGs in
4 winnow shards, sampled with replacement as DataComp does. The default is the ``tiny`` scale
(batches of 32 for a ``winnow-tiny-ViT``) shortened to 2,048 samples seen (64 steps; ``--samples_seen
0`` runs the scale's own 4,096), one checkpoint, one loader worker, on the CPU.

Figures per run: training samples per second from open_clip's own per-step timers (it logs every
step here; the first step, which allocates, is left out), and end-to-end samples per second
(process start to exit: imports, model creation, data, checkpoint). Runs alternate between the
two sides (the order flips each repeat); the headline is the best run of each side, since on a
shared machine other work only ever slows a run down. Medians and CPU seconds are printed too.
About two minutes on two idle cores.

    .venv/bin/python -m benchmarks.train [--scale tiny] [--repeats 2] [--json out.json]
    .venv/bin/python -m benchmarks.train --quick       # 1,024 samples, 1 repeat
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from winnow.services.trainer.scales import load_scale
from winnow.services.trainer.train import TrainConfig, open_clip_arguments

REPO_ROOT = Path(__file__).resolve().parents[1]
WINNOW, OPEN_CLIP = "winnow", "open_clip"
OPEN_CLIP_SCRIPT = (
    "import runpy, sys\n"
    "from winnow.shared.models.clip import register_winnow_configs\n"
    "register_winnow_configs()\n"
    "sys.argv = ['open_clip_train.main', *sys.argv[1:]]\n"
    "runpy.run_module('open_clip_train.main', run_name='__main__', alter_sys=True)\n"
)
_BATCH_TIME = re.compile(r"Train Epoch: .*? Batch \(t\): ([\d.]+),")


@dataclass
class Run:
    side: str
    repeat: int
    steps: int
    samples: int
    wall_seconds: float
    train_seconds: float  # sum of open_clip's per-step times, first step left out
    cpu_seconds: float  # user + system of the process (and its loader workers)

    @property
    def train_samples_per_second(self) -> float:
        return (self.samples - self.samples / self.steps) / self.train_seconds

    @property
    def end_to_end_samples_per_second(self) -> float:
        return self.samples / self.wall_seconds


def run_side(side: str, repeat: int, command: list[str], run_dir: Path, batch: int, log_path: Path) -> Run:
    start = time.perf_counter()
    with open(log_path, "wb") as output:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{side} run {repeat} failed ({process.returncode}); see {log_path}:\n"
                           + log_path.read_text(errors="replace")[-3000:])
    times = [float(t) for t in _BATCH_TIME.findall((run_dir / "out.log").read_text())]
    if len(times) < 2:
        raise RuntimeError(f"{side} run {repeat}: open_clip logged {len(times)} steps in {run_dir / 'out.log'}")
    return Run(side=side, repeat=repeat, steps=len(times), samples=len(times) * batch, wall_seconds=wall,
               train_seconds=sum(times[1:]), cpu_seconds=usage.ru_utime + usage.ru_stime)


def run_benchmark(scale_name: str, samples_seen: int | None, repeats: int, workers: int, work_dir: Path,
                  grad_checkpointing: bool) -> list[Run]:
    from tests.trainer.data import write_clipart_shards

    shards = work_dir / "shards"
    write_clipart_shards(shards, shards=4, per_shard=64, side=64)
    scale = load_scale(scale_name)
    scale_arg = scale_name
    if samples_seen is not None:  # a shorter run of the same scale
        fields = {**scale.to_json(), "samples_seen": samples_seen, "name": f"{scale.name}-{samples_seen}"}
        scale_arg = str(work_dir / "scale.json")
        Path(scale_arg).write_text(json.dumps(fields))
        scale = load_scale(scale_arg)
    runs: list[Run] = []
    for repeat in range(repeats):
        order = (WINNOW, OPEN_CLIP) if repeat % 2 == 0 else (OPEN_CLIP, WINNOW)
        for side in order:
            name = f"{side}-{repeat}"
            config = TrainConfig(scale=scale, data=(str(shards),), output_dir=str(work_dir / "runs"), exp_name=name,
                                 num_checkpoints=1, workers=workers, device="cpu", log_every_n_steps=1,
                                 grad_checkpointing=grad_checkpointing, save_frequency=0)
            if side == WINNOW:
                command = [sys.executable, "-m", "winnow.services.trainer.train", "--scale", scale_arg,
                           "--data_dir", str(shards), "--output_dir", config.output_dir, "--exp_name", name,
                           "--num_checkpoints", "1", "--workers", str(workers), "--device", "cpu",
                           "--log_every_n_steps", "1", "--save_frequency", "0", "--log_level", "WARNING"]
                command.append("--grad_checkpointing" if grad_checkpointing else "--no_grad_checkpointing")
            else:
                command = [sys.executable, "-c", OPEN_CLIP_SCRIPT, *open_clip_arguments(config, scale)]
            run = run_side(side, repeat, command, work_dir / "runs" / name, scale.batch_size,
                           work_dir / f"{name}.log")
            runs.append(run)
            print(f"  {side:9s} run {repeat}: {run.train_samples_per_second:7.1f} samples/s training, "
                  f"{run.end_to_end_samples_per_second:6.1f} end to end, {run.wall_seconds:5.1f} s wall, "
                  f"{run.cpu_seconds:5.1f} s CPU", flush=True)
            shutil.rmtree(work_dir / "runs" / name / "checkpoints", ignore_errors=True)  # ~160 MB each
    return runs


def summarise(runs: list[Run]) -> dict[str, dict[str, float]]:
    summary = {}
    for side in (WINNOW, OPEN_CLIP):
        mine = [r for r in runs if r.side == side]
        summary[side] = {
            "train_samples_per_second": max(r.train_samples_per_second for r in mine),
            "end_to_end_samples_per_second": max(r.end_to_end_samples_per_second for r in mine),
            "median_train_samples_per_second": statistics.median(r.train_samples_per_second for r in mine),
            "median_cpu_seconds": statistics.median(r.cpu_seconds for r in mine),
            "runs": len(mine),
        }
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="tiny", help="a named scale or a scale .json (default: tiny)")
    parser.add_argument("--samples_seen", type=int, default=2048,
                        help="shorten the scale to this many samples (0: the scale's own)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side, alternating")
    parser.add_argument("--workers", type=int, default=1, help="data loader workers")
    parser.add_argument("--grad_checkpointing", action="store_true", help="recompute activations (DataComp's GPU default)")
    parser.add_argument("--quick", action="store_true", help="1,024 samples seen, 1 repeat")
    parser.add_argument("--work_dir", type=Path, default=None, help="keep shards and logs here")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples_seen, args.repeats = 1024, 1
    args.samples_seen = args.samples_seen or None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="winnow-bench-train-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    print(f"training {args.scale} ({args.samples_seen or load_scale(args.scale).samples_seen} samples seen) on CPU, "
          f"{args.repeats} run(s) per side, work dir {work_dir}", flush=True)
    try:
        runs = run_benchmark(args.scale, args.samples_seen, args.repeats, args.workers, work_dir,
                             args.grad_checkpointing)
    except RuntimeError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    summary = summarise(runs)
    if args.work_dir is None:
        shutil.rmtree(work_dir, ignore_errors=True)
    winnow, open_clip = summary[WINNOW], summary[OPEN_CLIP]
    ratio = winnow["train_samples_per_second"] / open_clip["train_samples_per_second"]
    end_to_end = winnow["end_to_end_samples_per_second"] / open_clip["end_to_end_samples_per_second"]
    median = winnow["median_train_samples_per_second"] / open_clip["median_train_samples_per_second"]
    print(f"medians: training ratio {median:.2f}x; CPU seconds per run: winnow {winnow['median_cpu_seconds']:.1f}, "
          f"open_clip {open_clip['median_cpu_seconds']:.1f}")
    print(f"end to end: winnow {winnow['end_to_end_samples_per_second']:.1f} samples/s, open_clip "
          f"{open_clip['end_to_end_samples_per_second']:.1f} samples/s, ratio {end_to_end:.2f}x")
    print(f"train: winnow {winnow['train_samples_per_second']:.1f} samples/s, open_clip "
          f"{open_clip['train_samples_per_second']:.1f} samples/s, ratio {ratio:.2f}x "
          f"(best of {args.repeats} run(s) each)")
    if args.json:
        args.json.write_text(json.dumps({"scale": args.scale, "samples_seen": args.samples_seen, "ratio": ratio,
                                         "end_to_end_ratio": end_to_end, "summary": summary,
                                         "runs": [{**asdict(r), "train_samples_per_second": r.train_samples_per_second,
                                                   "end_to_end_samples_per_second": r.end_to_end_samples_per_second}
                                                  for r in runs]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
