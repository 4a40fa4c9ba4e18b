"""winnow's application layer: the ``winnow`` command, its Python API, the embedded runner, the example and the report.

``import winnow`` gives the commands as typed functions (:mod:`winnow.api`): ``winnow.download``,
``winnow.run``, ``winnow.filter``, ``winnow.reshard``, ``winnow.train``, ``winnow.evaluate``.
The library lives in ``shared`` (shard format, storage, bus, service shell, model interfaces and
clients) and the stages in ``services``; :mod:`winnow.ops` holds the operations tooling (deployment
rendering and checks, the local stack of ``winnow up``, the Triton launcher and model repository).
"""

from winnow.api import Evaluation, JobFilterResult, RunResult, download, evaluate, filter, reshard, run, train

__all__ = ["DownloadResult", "DownloadSpec", "Evaluation", "JobFilterResult", "RunResult", "download", "evaluate", "filter", "reshard", "run", "train"]


def __getattr__(name: str):
    """``winnow.DownloadSpec`` and ``winnow.DownloadResult``, imported on first use (they bring pyarrow)."""
    if name in ("DownloadSpec", "DownloadResult"):
        from winnow.services.downloader import job

        return getattr(job, name)
    raise AttributeError(f"module 'winnow' has no attribute {name!r}")
