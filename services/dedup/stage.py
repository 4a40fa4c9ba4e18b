"""The dedup stage: evaluation-set decontamination, then exact and near duplicates in the pool.

- ``eval_duplicate``: the image's descriptor is within the descriptor's threshold of an
  evaluation image (DataComp: ISC21 at cosine >= 0.604169; offline: perceptual hashes);
- ``exact_duplicate``: another sample with the same ``sha256`` was seen first;
- ``near_duplicate``: an earlier kept image of the pool is near-identical;
- ``invalid_uid``: the row has no usable uid (32 hex characters), so no claim can be made for it;
  the rest of its shard is judged as usual;
- ``duplicate_uid``: the uid already occurs at another place in the pool (another shard, or another
  sample of this one) that dedup saw first. A DataComp subset is a list of uids, so a uid can be
  kept once; shards a user brings may repeat one (the downloader refuses a pool's repeats itself).

Pool claims are made per batch (``PoolRegistry.claim_hashes``, then ``claim_images``, each in
sample order) and committed once per shard in ``finish_shard``, before the completion marker.

Columns: ``eval_similarity``, ``eval_match`` (the evaluation image), ``duplicate_of`` (uid),
``duplicate_similarity`` (the cosine to the nearest earlier kept image; 0 when none was near).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from winnow.services.dedup.index import EvalIndex, PoolRegistry
from winnow.services.dedup.options import DedupOptions
from winnow.services.dedup.pool_index import sign_bits
from winnow.shared import storage
from winnow.shared.curation import Sample, SampleStage, Verdict
from winnow.shared.models.base import ImageNeed, NearDuplicateDescriptor, image_need
from winnow.shared.models.provider import model_factory


UID_PATTERN = re.compile(r"[0-9a-fA-F]{32}")


def is_valid_uid(uid: object) -> bool:
    """A DataComp uid: 32 hexadecimal characters (128 bits)."""
    return isinstance(uid, str) and UID_PATTERN.fullmatch(uid) is not None


def build_stage(options: DedupOptions, model_preset: str = "offline", triton_url: str = "") -> DedupStage:
    """The dedup stage of ``options`` with the preset's descriptor (on Triton at ``triton_url`` if
    given), for the service and ``winnow run`` alike."""
    return DedupStage(model_factory("near_duplicate", model_preset, triton_url), options)


class DedupStage(SampleStage):
    name = "dedup"
    input_columns = ("uid", "sha256")
    output_columns = ("eval_similarity", "eval_match", "duplicate_of", "duplicate_similarity")
    drop_reasons = ("eval_duplicate", "exact_duplicate", "near_duplicate", "invalid_uid", "duplicate_uid")

    def __init__(self, descriptor: Callable[[], NearDuplicateDescriptor], options: DedupOptions | None = None) -> None:
        self.options = options or DedupOptions()
        self.batch_size = self.options.batch_size
        self._make_descriptor = descriptor
        self.descriptor: NearDuplicateDescriptor | None = None
        self.eval_index: EvalIndex | None = None
        self._registries: dict[str, PoolRegistry] = {}
        self._registries_lock = threading.Lock()

    def setup(self) -> None:
        if self.descriptor is None:
            self.descriptor = self._make_descriptor()
            if self.options.eval_index_dir:
                self.eval_index = EvalIndex.load(Path(self.options.eval_index_dir))
                if not self.eval_index.made_by(self.descriptor):
                    raise ValueError(f"the evaluation index was built with {self.eval_index.descriptor}, "
                                     f"not {self.descriptor.name}; rebuild it")

    def image_need(self) -> ImageNeed | None:
        self.setup()
        return ImageNeed.of_all([image_need(self.descriptor)])

    def teardown(self) -> None:
        for registry in self._registries.values():
            registry.close()
        self._registries.clear()

    def registry(self, job_id: str, job_root: str, descriptors: np.ndarray) -> PoolRegistry:
        """The job's registry; the first batch's descriptors tell whether they are hashes.

        One per job however many workers ask at once: a second registry would have its own
        connection (whose writes wait on the first's open transaction, "database is locked") and
        its own index of kept images, blind to the other's claims.
        """
        with self._registries_lock:
            if job_id not in self._registries:
                self._registries[job_id] = self._open_registry(job_root, job_id, descriptors)
            return self._registries[job_id]

    def _open_registry(self, job_root: str, job_id: str, descriptors: np.ndarray) -> PoolRegistry:
        if self.options.registry_dir:
            path = Path(self.options.registry_dir) / f"{job_id}.sqlite"
        elif storage.is_local(job_root):
            path = Path(job_root) / self.name / "_pool_registry.sqlite"
        else:
            raise ValueError(f"set registry_dir: the pool registry needs a local disk, and {job_root} is not one")
        return PoolRegistry(path, self.descriptor.dim, self.pool_threshold,
                            binary=sign_bits(descriptors[:1]) is not None, config=self.options.pool_index)

    @property
    def pool_threshold(self) -> float:
        return self.options.pool_threshold if self.options.pool_threshold is not None else self.descriptor.threshold

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
        descriptors = self.descriptor.describe([s.image for s in samples])
        registry = shard["registry"] = self.registry(ref.job_id, ref.job_root, descriptors)
        if self.eval_index is not None:
            eval_similarity, eval_match = self.eval_index.match(descriptors)
        else:
            eval_similarity, eval_match = [None] * len(samples), [None] * len(samples)
        uids = [sample.row.get("uid") for sample in samples]
        columns = [{"eval_similarity": None if similarity is None else float(similarity), "eval_match": match,
                    "duplicate_of": None} for similarity, match in zip(eval_similarity, eval_match)]
        verdicts: list[Verdict | None] = [None] * len(samples)
        valid = [i for i, uid in enumerate(uids) if is_valid_uid(uid)]
        places = [(ref.shard_id, str(samples[i].row.get("key"))) for i in valid]
        firsts = registry.claim_uids([(uids[i], *place) for i, place in zip(valid, places)]) if valid else []
        repeated = {i: first for i, place, first in zip(valid, places, firsts) if first != place}
        for i, (uid, match) in enumerate(zip(uids, eval_match)):
            if not is_valid_uid(uid):
                verdicts[i] = Verdict(False, "invalid_uid", f"uid {uid!r} is not 32 hex characters", columns[i])
            elif i in repeated:
                shard_id, key = repeated[i]
                verdicts[i] = Verdict(False, "duplicate_uid", f"uid {uid} first occurs in shard {shard_id}, "
                                      f"sample {key}", columns[i])
            elif match is not None:
                verdicts[i] = Verdict(False, "eval_duplicate", f"copies evaluation image {match} "
                                      f"(cosine {eval_similarity[i]:.3f})", columns[i])
        # The batch's claims in two calls, in sample order: the first of equal bytes or images wins.
        hashed = [i for i, v in enumerate(verdicts)
                  if v is None and self.options.exact and samples[i].row.get("sha256")]
        owners = registry.claim_hashes([(samples[i].row["sha256"], uids[i]) for i in hashed]) if hashed else []
        for i, owner in zip(hashed, owners):
            if owner != uids[i]:
                verdicts[i] = Verdict(False, "exact_duplicate", f"same bytes as {owner}",
                                      {**columns[i], "duplicate_of": owner})
        near = [i for i, v in enumerate(verdicts) if v is None] if self.options.near else []
        answers = registry.claim_images(descriptors[near], [uids[i] for i in near]) if near else []
        for i, (owner, best) in zip(near, answers):
            columns[i]["duplicate_similarity"] = best
            if owner != uids[i]:
                verdicts[i] = Verdict(False, "near_duplicate", f"near-identical to {owner} (cosine {best:.3f})",
                                      {**columns[i], "duplicate_of": owner})
        return [v if v is not None else Verdict(True, columns=columns[i]) for i, v in enumerate(verdicts)]

    def finish_shard(self, shard: dict[str, Any]) -> None:
        if "registry" in shard:
            shard["registry"].commit()  # one transaction per shard, before its completion marker
