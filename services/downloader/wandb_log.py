"""``--enable_wandb``: log a download to Weights & Biases as img2dataset does.

img2dataset starts one run in project ``--wandb_project`` with the download's options as its
config, and logs ``total/img_per_sec``, ``total/success``, ``total/failed_to_download``,
``total/failed_to_resize`` (ratios) and ``total/count`` as shards finish. ``WANDB_MODE=offline``
writes the run under ``./wandb`` without a network.
"""

from __future__ import annotations

import time

from winnow.shared.messages import ShardRef


class WandbRun:
    def __init__(self, run, job_root_stats) -> None:
        self._run = run
        self._started = time.monotonic()
        self._count = self._success = self._failed_to_download = self._failed_to_resize = 0
        self._stats = job_root_stats

    def shard_done(self, ref: ShardRef) -> None:
        stats = self._stats(ref.uri)
        self._count += stats.count
        self._success += stats.successes
        self._failed_to_download += stats.status_counts.get("failed_to_download", 0)
        self._failed_to_resize += stats.status_counts.get("failed_to_resize", 0)
        count = max(self._count, 1)
        self._run.log({"total/img_per_sec": self._count / max(time.monotonic() - self._started, 1e-6),
                       "total/success": self._success / count,
                       "total/failed_to_download": self._failed_to_download / count,
                       "total/failed_to_resize": self._failed_to_resize / count,
                       "total/count": self._count})

    def finish(self) -> None:
        import wandb

        self._run.finish()
        wandb.teardown()  # waits for wandb's service to write the run file out, then stops it


def start_wandb(project: str, config: dict) -> WandbRun:
    """A wandb run for this download; a clear error when wandb is not installed."""
    try:
        import wandb
    except ImportError as exc:
        raise SystemExit("winnow download: --enable_wandb True needs wandb (pip install wandb); "
                         "WANDB_MODE=offline logs without an account or a network") from exc
    from winnow.shared.shards import read_stats

    run = wandb.init(project=project, config=config, anonymous="allow")
    return WandbRun(run, read_stats)
