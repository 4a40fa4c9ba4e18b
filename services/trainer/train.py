"""CLIP training on winnow's shards, as DataComp trains: open_clip's own training loop, in process.

``train(config)`` turns a scale (``winnow.services.trainer.scales``) and a list of shard sources into
the argument list that DataComp's ``train.py`` gives ``open_clip_train.main.main`` and runs it in
this process, so ``torchrun --nproc_per_node N -m winnow.services.trainer.train ...`` works unchanged
(open_clip sets up the process group from torchrun's environment; on GPUs only: open_clip gives
DistributedDataParallel ``device_ids``, which torch refuses for CPU modules). DataComp's rules:

- samples seen are the scale's (its pool size), whatever the size of the data: the run is
  ``num_checkpoints`` open_clip "epochs" of ``samples_seen // num_checkpoints`` samples each,
  drawn with replacement (``--dataset-resampled``), a checkpoint after each;
- AdamW with weight decay 0.2, the scale's peak learning rate, warmup and beta2, cosine decay;
- the scale's batch size is global: each rank takes ``batch_size // (world_size * accum_freq)``;
- ``--local-loss --gather-with-grad --ddp-static-graph`` (nothing in a single process), and
  ``--grad-checkpointing`` on GPUs;
- several sources (``winnow.services.trainer.sources``: shard folders local or on object storage, winnow
  job folders, pools downloaded first, patterns) are mixed as DataComp's ``--data_weights`` say:
  a weight is the proportion of samples drawn from its source; they become open_clip's per-shard
  ``--train-data-upsampling-factors`` through the sources' sample counts. Without weights
  sources are drawn in proportion to their sizes.

A run resumes from its newest checkpoint (``--resume latest`` with ``--save-most-recent``, whose
``epoch_latest.pt`` is replaced atomically), so a killed run started again with the same
arguments picks up where it stopped (pool sources are downloaded into ``OUT/NAME/sources/`` once);
a finished one returns at once. Rank 0 writes the resolved sources to ``OUT/NAME/sources.json``
before training and, when done, ``OUT/NAME/info.json`` (scale, sources with their kinds, counts
and proportions, arguments, final checkpoint, steps, samples seen, the loss history from
open_clip's ``out.log``) and DataComp's ``info.pkl``, which DataComp's ``evaluate.py`` reads.

Runs are not bit-for-bit reproducible, resumed or not: open_clip's webdataset pipeline shuffles
samples with webdataset's ``shuffle``, which seeds itself from the time and the pid. A resumed
run reaches the same steps, samples seen and learning rate at every step as an unbroken one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pickle
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from winnow.services.trainer import sources as data_sources
from winnow.services.trainer.scales import Scale, resolve_scale
from winnow.services.trainer.progress import TrainConsole
from winnow.services.trainer.sources import PoolOptions, Source

log = logging.getLogger(__name__)

WEIGHT_DECAY = 0.2  # DataComp (and open_clip's default)
PRECISIONS = ("amp", "amp_bf16", "amp_bfloat16", "bf16", "fp16", "pure_bf16", "pure_fp16", "fp32")
LATEST_CHECKPOINT = "epoch_latest.pt"  # open_clip's --save-most-recent file


class TrainingError(RuntimeError):
    """open_clip's training refused to start or stopped without its final checkpoint."""


@dataclass(frozen=True)
class TrainConfig:
    scale: str | Scale  # a named scale, a scale .json file, or a Scale
    data: tuple[str, ...]  # one per source: shard folder, job folder, pool file, .tar, brace pattern, pipe: URL
    output_dir: str  # open_clip's --logs: the run lives in output_dir/exp_name
    exp_name: str | None = None  # default "{scale}_scale", as DataComp
    data_weights: tuple[float, ...] | None = None  # one per source: proportions of samples drawn (normalised)
    num_checkpoints: int = 5  # open_clip epochs; one checkpoint after each (DataComp's default)
    workers: int = 4  # data loader processes per rank (DataComp's default)
    seed: int = 0
    precision: str | None = None  # None: amp on CUDA, fp32 elsewhere
    device: str | None = None  # None: cuda when available, else cpu
    resume: str | None = "latest"  # "latest" (the run's newest checkpoint), a path, or None (fresh run)
    accum_freq: int = 1  # gradient accumulation steps per optimizer step
    log_every_n_steps: int = 100  # open_clip logs loss and throughput this often (DataComp: 100)
    grad_checkpointing: bool | None = None  # None: on with CUDA (DataComp's memory trade), off on CPU (~15% faster)
    grad_clip_norm: float | None = None
    save_frequency: int = 1  # keep epoch_K.pt every this many checkpoints (the last is always kept)
    report_to: str = "none"  # or tensorboard, wandb, all (open_clip's --report-to)
    extra_args: tuple[str, ...] = ()  # appended to open_clip's arguments last, so they win
    pool: PoolOptions = field(default_factory=PoolOptions)  # how pool sources are downloaded
    verbose: bool = False  # open_clip's parameter dump and log lines on the console, instead of the bar
    show_progress: bool = True  # a bar of steps with samples/s and loss (rank 0)

    def __post_init__(self) -> None:
        # accept lists from callers; the config stays hashable and frozen
        object.__setattr__(self, "data", tuple(str(d) for d in self.data))
        if self.data_weights is not None:
            object.__setattr__(self, "data_weights", tuple(float(w) for w in self.data_weights))
        object.__setattr__(self, "extra_args", tuple(self.extra_args))

    def validate(self) -> None:
        data_sources.check_weights(self.data, self.data_weights)
        self.pool.validate()
        for name in ("num_checkpoints", "accum_freq", "log_every_n_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.save_frequency < 0:
            raise ValueError(f"save_frequency must be >= 0, got {self.save_frequency}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; open_clip takes {', '.join(PRECISIONS)}")
        if re.match(r"^\w+://", self.output_dir):
            raise ValueError(f"output_dir must be a local folder (open_clip writes there), got {self.output_dir}")
        if self.exp_name is not None and (not self.exp_name or "/" in self.exp_name):
            raise ValueError(f"exp_name must be a plain folder name, got {self.exp_name!r}")

    def run_name(self, scale: Scale) -> str:
        return self.exp_name or f"{scale.name}_scale"


@dataclass(frozen=True)
class RunPlan:
    """What open_clip will do with a scale: it rounds each epoch up to whole batches per worker."""

    world_size: int
    per_rank_batch_size: int
    epochs: int
    steps_per_epoch: int  # optimizer steps
    samples_per_epoch: int

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def samples_seen(self) -> int:
        return self.epochs * self.samples_per_epoch


def plan_run(scale: Scale, *, num_checkpoints: int, world_size: int = 1, accum_freq: int = 1,
             workers: int = 1) -> RunPlan:
    """The epoch and step counts open_clip's webdataset loader gives (``get_wds_dataset``)."""
    if scale.batch_size % (world_size * accum_freq):
        raise ValueError(f"scale {scale.name!r}: global batch {scale.batch_size} does not split over "
                         f"{world_size} ranks x {accum_freq} accumulation steps")
    per_rank = scale.batch_size // (world_size * accum_freq)
    per_epoch = scale.samples_seen // num_checkpoints
    if per_epoch < 1:
        raise ValueError(f"scale {scale.name!r}: {scale.samples_seen} samples cannot make {num_checkpoints} checkpoints")
    micro_batches = math.ceil(per_epoch / (per_rank * world_size))
    loader_workers = max(1, workers)
    micro_batches = math.ceil(micro_batches / loader_workers) * loader_workers
    steps = micro_batches // accum_freq
    return RunPlan(world_size=world_size, per_rank_batch_size=per_rank, epochs=num_checkpoints,
                   steps_per_epoch=steps, samples_per_epoch=steps * scale.batch_size)


# ---------------------------------------------------------------------------------------------
# Shard sources


def source_patterns(source: str) -> list[str]:
    """The webdataset patterns of one source (not a pool: pools are downloaded by ``train``).

    A shard folder becomes ``{first..last}.tar`` runs of its finished shards (all its tars when
    it has no ``_stats.json`` markers); a job folder its ``reshard/`` or furthest stage; a ``.tar``,
    a brace pattern or a ``pipe:`` URL is passed to webdataset as it is.
    """
    return list(data_sources.resolve_source(source, count=False, download=False).patterns)


def train_data_argument(data: Sequence[str], weights: Sequence[float] | None = None) -> tuple[str, str | None]:
    """open_clip's ``--train-data`` and ``--train-data-upsampling-factors`` for sources that need no download."""
    resolved = data_sources.resolve_sources(data, weights, count=weights is not None, download=False)
    return data_sources.train_data(resolved)


# ---------------------------------------------------------------------------------------------
# open_clip's arguments


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def open_clip_arguments(config: TrainConfig, scale: Scale, *, world_size: int = 1,
                        train_data: tuple[str, str | None] | None = None) -> list[str]:
    """The argument list for ``open_clip_train.main.main``, as DataComp's ``train.py`` builds it."""
    config.validate()
    plan = plan_run(scale, num_checkpoints=config.num_checkpoints, world_size=world_size,
                    accum_freq=config.accum_freq, workers=config.workers)
    data, factors = train_data or train_data_argument(config.data, config.data_weights)
    device = config.device or _default_device()
    precision = config.precision or ("amp" if device.startswith("cuda") else "fp32")
    args = [
        "--model", scale.model,
        "--train-data", data,
        "--dataset-type", "webdataset",
        "--dataset-resampled",
        "--train-num-samples", str(scale.samples_seen // config.num_checkpoints),
        "--epochs", str(config.num_checkpoints),
        "--batch-size", str(plan.per_rank_batch_size),
        "--accum-freq", str(config.accum_freq),
        "--lr", f"{scale.learning_rate:g}",
        "--warmup", str(scale.warmup),
        "--wd", f"{WEIGHT_DECAY:g}",
        "--opt", "adamw",
        "--lr-scheduler", "cosine",
        "--precision", precision,
        "--device", device,
        "--workers", str(config.workers),
        "--seed", str(config.seed),
        "--local-loss",
        "--gather-with-grad",
        "--ddp-static-graph",
        "--save-frequency", str(config.save_frequency),
        "--save-most-recent",
        "--logs", str(config.output_dir),
        "--name", config.run_name(scale),
        "--log-every-n-steps", str(config.log_every_n_steps),
        "--report-to", config.report_to,
    ]
    if config.grad_checkpointing or (config.grad_checkpointing is None and device.startswith("cuda")):
        args.append("--grad-checkpointing")
    if scale.beta2 is not None:
        args += ["--beta2", f"{scale.beta2:g}"]
    if factors is not None:
        args += ["--train-data-upsampling-factors", factors]
    if config.grad_clip_norm is not None:
        args += ["--grad-clip-norm", f"{config.grad_clip_norm:g}"]
    if config.resume is not None:
        args += ["--resume", config.resume]
    return args + list(config.extra_args)


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class LossRecord:
    epoch: int
    step: int  # optimizer steps done, over the whole run
    samples_seen: int
    loss: float
    lr: float
    samples_per_second: float


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path  # output_dir/exp_name
    checkpoint: Path  # the final epoch_N.pt
    scale: Scale
    epochs: int
    steps: int
    samples_seen: int
    seconds: float  # this call's wall time (a resumed run counts only its own part)
    losses: tuple[LossRecord, ...] = field(default=())  # rank 0 only
    info_path: Path | None = None  # rank 0 only

    @property
    def final_loss(self) -> float | None:
        return self.losses[-1].loss if self.losses else None


_TRAIN_LINE = re.compile(r"Train Epoch: (?P<epoch>\d+) \[\s*(?P<samples>\d+)/(?P<per_epoch>\d+) ")
_FIELDS = {
    "lr": re.compile(r" LR: (\S+)"),
    "loss": re.compile(r" Loss: (\S+) \("),  # the total; per-term losses are "Contrastive_loss: ..."
    "samples_per_second": re.compile(r"Batch \(t\): [^,]+, (\S+)/s,"),
}


def read_loss_history(log_path: str | Path, global_batch_size: int, steps_per_epoch: int) -> list[LossRecord]:
    """The training lines of open_clip's ``out.log``, by step; a resumed run's lines replace the
    killed run's for the steps it did again."""
    by_step: dict[int, LossRecord] = {}
    path = Path(log_path)
    if not path.exists():
        return []
    for line in path.read_text(errors="replace").splitlines():
        match = _TRAIN_LINE.search(line)
        if match is None:
            continue
        values = {name: pattern.search(line) for name, pattern in _FIELDS.items()}
        if any(v is None for v in values.values()):
            continue
        epoch, samples = int(match["epoch"]), int(match["samples"])
        step = epoch * steps_per_epoch + samples // global_batch_size
        by_step[step] = LossRecord(epoch=epoch, step=step, samples_seen=step * global_batch_size,
                                   loss=float(values["loss"][1]), lr=float(values["lr"][1]),
                                   samples_per_second=float(values["samples_per_second"][1]))
    return [by_step[s] for s in sorted(by_step)]


def _checkpoint_epoch(path: Path) -> int | None:
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        return int(checkpoint["epoch"])
    except Exception:  # a partial or foreign file: not a checkpoint to trust
        return None


def latest_checkpoint(output_dir: str | Path, exp_name: str) -> Path:
    """The newest complete checkpoint of a run: ``OUT/NAME/checkpoints/epoch_K.pt``.

    ``epoch_latest.pt`` is replaced atomically, so its epoch K says which ``epoch_K.pt`` is whole
    (a run killed while saving may leave a partial higher-numbered one).
    """
    directory = Path(output_dir) / exp_name / "checkpoints"
    numbered = {}
    if directory.is_dir():
        for path in directory.glob("epoch_*.pt"):
            suffix = path.stem[len("epoch_"):]
            if suffix.isdigit():
                numbered[int(suffix)] = path
    latest = directory / LATEST_CHECKPOINT
    if latest.exists():
        epoch = _checkpoint_epoch(latest)
        if epoch is not None:
            return numbered.get(epoch, latest)
    if numbered:
        return numbered[max(numbered)]
    raise FileNotFoundError(f"no checkpoint in {directory}")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Running open_clip


@contextlib.contextmanager
def _open_clip_logging() -> Iterator[None]:
    """open_clip adds console and file handlers to the root logger and sets every logger's level;
    undo that afterwards so the caller's logging is as it was (and a second run logs once)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: lg.level for name, lg in logging.root.manager.loggerDict.items()
              if isinstance(lg, logging.Logger)}
    for handler in handlers:  # open_clip brings its own console handler
        root.removeHandler(handler)
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        for name, lg in logging.root.manager.loggerDict.items():
            if isinstance(lg, logging.Logger):
                lg.setLevel(levels.get(name, logging.NOTSET))


def run_open_clip(args: list[str]) -> None:
    """``open_clip_train.main.main(args)`` in this process, its exits turned into exceptions."""
    from open_clip_train.main import main as open_clip_main

    from winnow.shared.models.clip import register_winnow_configs

    register_winnow_configs()
    with _open_clip_logging():
        try:
            status = open_clip_main(args)
        except SystemExit as exc:
            raise TrainingError(f"open_clip training exited with status {exc.code}") from exc
    if status is not None and status < 0:
        raise TrainingError("open_clip training refused to start (see its message above: an existing "
                            "experiment needs resume='latest', or the options conflict)")


def train(config: TrainConfig) -> TrainResult:
    """Train a CLIP on ``config.data`` at ``config.scale``; resumes the run if it exists."""
    import open_clip
    from open_clip_train.distributed import world_info_from_env

    from winnow.shared.models.clip import register_winnow_configs

    config.validate()
    scale = resolve_scale(config.scale)
    register_winnow_configs()
    if scale.model not in open_clip.list_models():
        raise ValueError(f"scale {scale.name!r}: open_clip has no architecture {scale.model!r}")
    _, rank, world_size = world_info_from_env()
    if world_size > 1 and not (config.device or _default_device()).startswith("cuda"):
        raise ValueError("open_clip trains with several processes only on GPUs: it gives DistributedDataParallel "
                         "device_ids, which torch refuses for CPU modules; run one process on a CPU")
    plan = plan_run(scale, num_checkpoints=config.num_checkpoints, world_size=world_size,
                    accum_freq=config.accum_freq, workers=config.workers)
    name = config.run_name(scale)
    run_dir = Path(config.output_dir) / name
    sources = data_sources.resolve_sources(config.data, config.data_weights, work_dir=str(run_dir), pool=config.pool,
                                           download=rank == 0)
    train_data = data_sources.train_data(sources)
    args = open_clip_arguments(config, scale, world_size=world_size, train_data=train_data)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(run_dir / "sources.json", json.dumps(sources_record(sources), indent=1).encode())
        for source in sources:
            log.info("source %s (%s): %s samples%s, drawn %s%s", source.name, source.kind,
                     source.sample_count if source.sample_count is not None else "?",
                     f" ({source.count_method})" if source.count_method else "",
                     f"{source.proportion:.1%}" if source.proportion is not None else "in proportion to size",
                     f"; {source.detail}" if source.detail else "")
        log.info("training %s (%s) on %s: %d steps of %d, %d checkpoints -> %s", scale.name, scale.model,
                 train_data[0], plan.steps, scale.batch_size, plan.epochs, run_dir)
    start = time.time()
    console = TrainConsole(plan.steps, plan.samples_per_epoch // max(plan.steps_per_epoch, 1),
                           verbose=config.verbose, show=config.show_progress and rank == 0)
    with console.attached():
        run_open_clip(args)
    seconds = time.time() - start
    checkpoint = run_dir / "checkpoints" / f"epoch_{config.num_checkpoints}.pt"
    result = TrainResult(run_dir=run_dir, checkpoint=checkpoint, scale=scale, epochs=plan.epochs,
                         steps=plan.steps, samples_seen=plan.samples_seen, seconds=seconds)
    if rank != 0:
        return result
    if not checkpoint.exists():
        raise TrainingError(f"training ended without its final checkpoint {checkpoint}")
    losses = tuple(read_loss_history(run_dir / "out.log", scale.batch_size, plan.steps_per_epoch))
    info = {
        "scale": scale.name,
        "scale_config": scale.to_json(),
        "data": list(config.data),
        "data_weights": list(config.data_weights) if config.data_weights is not None else None,
        "sources": sources_record(sources),
        "train_data": train_data[0],
        "train_data_upsampling_factors": train_data[1],
        "exp_name": name,
        "checkpoint": str(checkpoint),
        "checkpoints": sorted(str(p) for p in (run_dir / "checkpoints").glob("epoch_*.pt")),
        "epochs": plan.epochs,
        "steps": plan.steps,
        "samples_seen": plan.samples_seen,
        "nominal_samples_seen": scale.samples_seen,
        "world_size": world_size,
        "per_rank_batch_size": plan.per_rank_batch_size,
        "open_clip_version": open_clip.__version__,
        "open_clip_args": args,
        "seconds": round(seconds, 3),
        "final_loss": losses[-1].loss if losses else None,
        "loss_history": [vars(record) for record in losses],
    }
    info_path = run_dir / "info.json"
    _write_atomic(info_path, json.dumps(info, indent=1).encode())
    # DataComp's evaluate.py reads this file from the training output folder
    datacomp_info = {"scale": scale.name, "checkpoint": str(checkpoint), "scale_config": scale.datacomp_config(),
                     "data_dir": "::".join(config.data)}
    _write_atomic(run_dir / "info.pkl", pickle.dumps(datacomp_info))
    log.info("trained %s: %d steps, %d samples seen, final loss %s -> %s", name, plan.steps, plan.samples_seen,
             info["final_loss"], checkpoint)
    return TrainResult(run_dir=run_dir, checkpoint=checkpoint, scale=scale, epochs=plan.epochs, steps=plan.steps,
                       samples_seen=plan.samples_seen, seconds=seconds, losses=losses, info_path=info_path)


def sources_record(sources: Sequence[Source]) -> list[dict]:
    """The run's sources as ``sources.json`` and ``info.json`` record them."""
    return [source.to_json() for source in sources]


def main(argv: list[str] | None = None) -> int:
    """``python -m winnow.services.trainer.train`` (and torchrun): the ``winnow train`` options."""
    from winnow.services.trainer.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
