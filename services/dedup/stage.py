"""The dedup stage: evaluation-set decontamination, then exact and near duplicates in the pool.

- ``eval_duplicate``: the image's descriptor is within the descriptor's threshold of an
  evaluation image (DataComp: ISC21 at cosine >= 0.604169; offline: perceptual hashes);
- ``exact_duplicate``: another sample with the same ``sha256`` was seen first;
- ``near_duplicate``: an earlier kept image of the pool is near-identical;
- ``invalid_uid``: the row has no usable uid (32 hex characters), so no claim can be made for it;
  the rest of its shard is judged as usual.

Columns: ``eval_similarity``, ``eval_match`` (the evaluation image), ``duplicate_of`` (uid),
``duplicate_similarity`` (the cosine to the nearest earlier kept image; 0 when none was near).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.dedup.index import EvalIndex, PoolRegistry
from shared import storage
from shared.curation import Sample, SampleStage, Verdict
from shared.models.base import NearDuplicateDescriptor


UID_PATTERN = re.compile(r"[0-9a-fA-F]{32}")


def is_valid_uid(uid: object) -> bool:
    """A DataComp uid: 32 hexadecimal characters (128 bits)."""
    return isinstance(uid, str) and UID_PATTERN.fullmatch(uid) is not None


@dataclass(frozen=True)
class DedupOptions:
    eval_index_dir: str = ""  # a directory made by `winnow dedup build-index`; empty = no decontamination
    registry_dir: str = ""  # where the pool registry lives; empty = {job_root}/dedup when local
    pool_threshold: float | None = None  # near-duplicate cosine; None = the descriptor's own threshold
    exact: bool = True
    near: bool = True
    batch_size: int = 64


class DedupStage(SampleStage):
    name = "dedup"
    input_columns = ("uid", "sha256")
    output_columns = ("eval_similarity", "eval_match", "duplicate_of", "duplicate_similarity")
    drop_reasons = ("eval_duplicate", "exact_duplicate", "near_duplicate", "invalid_uid")

    def __init__(self, descriptor: Callable[[], NearDuplicateDescriptor], options: DedupOptions | None = None) -> None:
        self.options = options or DedupOptions()
        self.batch_size = self.options.batch_size
        self._make_descriptor = descriptor
        self.descriptor: NearDuplicateDescriptor | None = None
        self.eval_index: EvalIndex | None = None
        self._registries: dict[str, PoolRegistry] = {}

    def setup(self) -> None:
        if self.descriptor is None:
            self.descriptor = self._make_descriptor()
            if self.options.eval_index_dir:
                self.eval_index = EvalIndex.load(Path(self.options.eval_index_dir))
                if not self.eval_index.made_by(self.descriptor):
                    raise ValueError(f"the evaluation index was built with {self.eval_index.descriptor}, "
                                     f"not {self.descriptor.name}; rebuild it")

    def teardown(self) -> None:
        for registry in self._registries.values():
            registry.close()
        self._registries.clear()

    def registry(self, job_id: str, job_root: str) -> PoolRegistry:
        if job_id not in self._registries:
            if self.options.registry_dir:
                path = Path(self.options.registry_dir) / f"{job_id}.sqlite"
            elif storage.is_local(job_root):
                path = Path(job_root) / self.name / "_pool_registry.sqlite"
            else:
                raise ValueError(f"set registry_dir: the pool registry needs a local disk, and {job_root} is not one")
            self._registries[job_id] = PoolRegistry(path, self.descriptor.dim)
        return self._registries[job_id]

    def thresholds(self) -> dict[str, float]:
        found = {}
        if self.descriptor is not None:
            found["duplicate_similarity"] = (self.options.pool_threshold if self.options.pool_threshold is not None
                                             else self.descriptor.threshold)
        if self.eval_index is not None:
            found["eval_similarity"] = self.eval_index.threshold
        return found

    def judge(self, samples: list[Sample], shard: dict[str, Any]) -> list[Verdict]:
        self.setup()
        ref = shard["ref"]
        registry = self.registry(ref.job_id, ref.job_root)
        descriptors = self.descriptor.describe([s.image for s in samples])
        if self.eval_index is not None:
            eval_similarity, eval_match = self.eval_index.match(descriptors)
        else:
            eval_similarity, eval_match = [None] * len(samples), [None] * len(samples)
        threshold = self.options.pool_threshold if self.options.pool_threshold is not None else self.descriptor.threshold
        verdicts = []
        for sample, descriptor, similarity, match in zip(samples, descriptors, eval_similarity, eval_match):
            uid = sample.row.get("uid")
            columns = {"eval_similarity": None if similarity is None else float(similarity), "eval_match": match,
                       "duplicate_of": None}
            if not is_valid_uid(uid):
                verdicts.append(Verdict(False, "invalid_uid", f"uid {uid!r} is not 32 hex characters", columns))
                continue
            if match is not None:
                verdicts.append(Verdict(False, "eval_duplicate", f"copies evaluation image {match} "
                                        f"(cosine {similarity:.3f})", columns))
                continue
            sha = sample.row.get("sha256")
            if self.options.exact and sha:
                owner = registry.claim_hash(sha, uid)
                if owner != uid:
                    verdicts.append(Verdict(False, "exact_duplicate", f"same bytes as {owner}",
                                            {**columns, "duplicate_of": owner}))
                    continue
            if self.options.near:
                owner, best = registry.claim_image(descriptor, uid, threshold)
                columns["duplicate_similarity"] = best
                if owner != uid:
                    verdicts.append(Verdict(False, "near_duplicate", f"near-identical to {owner} (cosine {best:.3f})",
                                            {**columns, "duplicate_of": owner}))
                    continue
            verdicts.append(Verdict(True, columns=columns))
        return verdicts
