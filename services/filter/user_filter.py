"""Your own filter: ``winnow filter --name my_pkg.my_module:my_filter``.

The contract is one function::

    def my_filter(metadata: pyarrow.Table, embeddings: dict[str, numpy.ndarray]):
        return keep                       # a boolean array, one entry per row of ``metadata``
        # or: return keep, reasons        # plus a reason (str) per row or per dropped row

- ``metadata`` holds the candidates (in a winnow ledger, the rows whose ``status`` is
  ``success``; in DataComp's metadata, every row), with DataComp's columns (``uid``, ``url``,
  ``text``, ``original_width``, ``original_height``, ``clip_b32_similarity_score``, ...) and
  whatever else the parquet files have (winnow's ``toxicity_score``, ``nsfw_score``, ...).
  Declare ``my_filter.columns = [...]`` to read only those columns.
- ``embeddings`` maps each ``.npz`` key (``b32_img``, ``b32_txt``, ``l14_img``, ...) to an array
  with one row per candidate (empty when the folder has no ``.npz``). Declare
  ``my_filter.embedding_keys = [...]`` to read only those (or ``[]`` for none).
- ``reasons``: a sequence of str (None where kept), as long as ``metadata`` or as the number of
  dropped rows; a dropped row without one gets the function's name as its reason.

winnow does the rest: the subset ``.npy`` of the kept uids, the counts per reason beside it
(``winnow.services.filter.criteria``), and the resharding.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from winnow.shared import storage

_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class UserFilterError(ValueError):
    """A user filter cannot be found, or broke its contract."""


def is_user_filter(name: str) -> bool:
    """True for ``module:function`` names (DataComp's baselines are plain names)."""
    return ":" in name


def load_user_filter(spec: str) -> Callable:
    """Import ``package.module:function`` and return the function."""
    if not _SPEC.match(spec):
        raise UserFilterError(f"a filter of your own is named module:function (e.g. my_pkg.filters:english_top30), "
                              f"got {spec!r}")
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserFilterError(f"cannot import {module_name!r} for filter {spec!r}: {exc}") from exc
    function = getattr(module, attribute, None)
    if not callable(function):
        raise UserFilterError(f"{module_name} has no function {attribute!r} (filter {spec!r})")
    return function


def available_embedding_keys(files: Sequence[str]) -> list[str]:
    """The array names of the first ``.npz`` beside the parquet files (none when there is none)."""
    import io
    import zipfile

    for parquet in files:
        npz = parquet[: -len(".parquet")] + ".npz"
        if storage.exists(npz):
            with zipfile.ZipFile(io.BytesIO(storage.read_bytes(npz))) as archive:
                return sorted(name[: -len(".npy")] for name in archive.namelist() if name.endswith(".npy"))
    return []


def available_columns(files: Sequence[str]) -> list[str]:
    """Every column of the first parquet file, bar the ledger's bookkeeping ``status``."""
    fs, path = storage.filesystem(files[0])
    return [name for name in pq.read_schema(path, filesystem=fs).names if name != "status"]


@dataclass(frozen=True)
class UserVerdict:
    keep: np.ndarray
    reasons: Sequence[str | None] | None


def run_user_filter(function: Callable, spec: str, metadata: pa.Table,
                    embeddings: Mapping[str, np.ndarray]) -> UserVerdict:
    """Call the function and check what it returned against the contract."""
    returned = function(metadata, dict(embeddings))
    reasons = None
    if isinstance(returned, tuple):
        if len(returned) != 2:
            raise UserFilterError(f"filter {spec} returned a tuple of {len(returned)}; expected (keep, reasons)")
        returned, reasons = returned
    if isinstance(returned, (pa.Array, pa.ChunkedArray)):
        returned = returned.to_numpy(zero_copy_only=False)
    keep = np.asarray(returned)
    n = metadata.num_rows
    if keep.shape != (n,):
        raise UserFilterError(f"filter {spec} returned a mask of shape {keep.shape} for {n} candidates")
    if keep.dtype != bool:
        raise UserFilterError(f"filter {spec} returned a mask of dtype {keep.dtype}; it must be boolean")
    if reasons is not None:
        if isinstance(reasons, (pa.Array, pa.ChunkedArray)):
            reasons = reasons.to_pylist()
        reasons = list(reasons)
        dropped = int((~keep).sum())
        if len(reasons) not in (n, dropped):
            raise UserFilterError(f"filter {spec} returned {len(reasons)} reasons; expected one per candidate ({n}) "
                                  f"or one per dropped candidate ({dropped})")
        bad = next((r for r in reasons if r is not None and not isinstance(r, str)), None)
        if bad is not None:
            raise UserFilterError(f"filter {spec} returned a reason {bad!r} that is not a string")
    return UserVerdict(keep=keep, reasons=reasons)
