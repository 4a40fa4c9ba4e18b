"""Why a filter removed each candidate: its criteria, counted, and a reason per dropped row.

A filter's keep-mask comes from the rules in ``winnow.services.filter.baselines`` (or from a user's
function); this module only explains it. Each baseline is described as an ordered list of
criteria (a name and the mask of candidates that pass it); a dropped candidate is attributed
to the *first* criterion it fails, and one it fails none of (the rule's last, costliest test,
such as language identification, which runs only on rows the cheaper criteria kept) to the
baseline's final criterion. So the counts are a waterfall: each says how many candidates that
criterion removed among those the earlier ones left, and they add up to the dropped rows.

Written beside the subset (``subset.npy``):

- ``subset.criteria.json``: the filter, candidates, kept, and ``removed_by`` {criterion: count}
  in criterion order, with each criterion's rule in words;
- ``subset.dropped.parquet``: ``uid`` and ``reason`` for every dropped candidate (the
  reason dictionary-encoded); written only when there are several reasons, since with one
  (``only_reason`` in the summary) every candidate outside the subset has it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from winnow.shared import storage

CRITERIA_SUFFIX = ".criteria.json"
DROPPED_SUFFIX = ".dropped.parquet"


@dataclass(frozen=True)
class Criterion:
    """One test of a filter: ``passes`` is True for the candidates it lets through."""

    name: str  # machine-readable, e.g. ``too_few_words``: what a failing candidate is
    rule: str  # the rule in words, e.g. ``more than 2 words``
    passes: np.ndarray | None  # None for the final criterion: whatever else the filter dropped


@dataclass
class Attribution:
    """The criteria's counts and each candidate's reason code (-1 where kept)."""

    names: list[str]
    rules: list[str]
    codes: np.ndarray  # int16 per candidate: index into ``names``, -1 for kept
    removed_by: dict[str, int] = field(default_factory=dict)

    def reasons(self) -> pa.DictionaryArray:
        """The reason of every candidate (null where kept), dictionary-encoded."""
        codes = pa.array(self.codes, mask=self.codes < 0, type=pa.int16())
        return pa.DictionaryArray.from_arrays(codes, pa.array(self.names, type=pa.string()))


def attribute(keep: np.ndarray, criteria: Sequence[Criterion]) -> Attribution:
    """Give each dropped candidate the first criterion it fails (the last criterion when it
    fails none of the others)."""
    keep = np.asarray(keep, dtype=bool)
    if not criteria or criteria[-1].passes is not None:
        raise ValueError("a filter's criteria end with the one that takes whatever else it dropped")
    codes = np.full(len(keep), -1, dtype=np.int16)
    undecided = ~keep
    for index, criterion in enumerate(criteria[:-1]):
        passes = np.asarray(criterion.passes, dtype=bool)
        if passes.shape != keep.shape:
            raise ValueError(f"criterion {criterion.name!r} has {passes.shape[0]} rows for {len(keep)} candidates")
        failing = undecided & ~passes
        codes[failing] = index
        undecided &= passes
    codes[undecided] = len(criteria) - 1
    counts = np.bincount(codes[codes >= 0], minlength=len(criteria))
    names = [c.name for c in criteria]
    return Attribution(names=names, rules=[c.rule for c in criteria], codes=codes,
                       removed_by={name: int(n) for name, n in zip(names, counts)})


def from_reasons(keep: np.ndarray, reasons: Sequence[str | None] | None, default: str) -> Attribution:
    """An attribution from a reason per row (a user filter's); rows dropped without one get
    ``default``."""
    keep = np.asarray(keep, dtype=bool)
    codes = np.full(len(keep), -1, dtype=np.int16)
    dropped = np.nonzero(~keep)[0]
    if reasons is None:
        values = pa.array([default] * len(dropped), type=pa.string())
    else:
        values = pa.array(reasons, type=pa.string()).take(pa.array(dropped)) if len(reasons) == len(keep) \
            else pa.array(reasons, type=pa.string())
        values = values.fill_null(default)
    encoded = values.dictionary_encode()
    names = [str(n) for n in encoded.dictionary.to_pylist()]
    codes[dropped] = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int16)
    counts = np.bincount(codes[codes >= 0], minlength=len(names))
    order = np.argsort(-counts, kind="stable")
    return Attribution(names=names, rules=["" for _ in names], codes=codes,
                       removed_by={names[i]: int(counts[i]) for i in order})


def sidecar_paths(save_path: str) -> tuple[str, str]:
    """``subset.npy`` -> (``subset.criteria.json``, ``subset.dropped.parquet``)."""
    stem = save_path[: -len(".npy")] if save_path.endswith(".npy") else save_path
    return stem + CRITERIA_SUFFIX, stem + DROPPED_SUFFIX


def write_sidecars(save_path: str, summary: dict, uids: pa.Array | pa.ChunkedArray, attribution: Attribution) -> None:
    """Write the criteria summary and the dropped candidates' reasons beside the subset."""
    criteria_uri, dropped_uri = sidecar_paths(save_path)
    reasons = [name for name, count in attribution.removed_by.items() if count]
    if len(reasons) > 1:
        dropped = attribution.codes >= 0
        mask = pa.array(dropped)
        table = pa.table({"uid": uids.filter(mask), "reason": attribution.reasons().filter(mask)})
        with storage.atomic_open(dropped_uri) as handle:
            pq.write_table(table, handle)
    elif storage.exists(dropped_uri):
        storage.remove(dropped_uri)
    # With one reason (a CLIP-score cut, say) every candidate outside the subset has it; a pool of
    # billions then needs no list of them.
    document = {**summary, "removed_by": attribution.removed_by, "only_reason": reasons[0] if len(reasons) == 1 else None,
                "rules": {n: r for n, r in zip(attribution.names, attribution.rules) if r}}
    storage.write_text(criteria_uri, json.dumps(document, indent=1, default=str))


def read_criteria(save_path: str) -> dict | None:
    """The criteria summary written beside a subset, or None when there is none."""
    criteria_uri, _ = sidecar_paths(save_path)
    if not storage.exists(criteria_uri):
        return None
    return json.loads(storage.read_text(criteria_uri))
