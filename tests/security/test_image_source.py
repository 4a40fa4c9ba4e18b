"""A ledger names the tar its images are in; a service reads there only inside its read roots.

The ledger is data: a stage must not follow it out of the roots a bus message is held to. Here a
ledger inside the job storage names a tar outside it (a canary); the stage refuses before
reading, with an ``AccessDenied`` that names the setting, and the worker dead-letters such a
shard at once (no retry can help).
"""

from __future__ import annotations

import pytest

from winnow.services.safety.stage import SafetyOptions, SafetyStage
from winnow.shared.access import AccessDenied, AccessPolicy
from winnow.shared.messages import make_ref
from winnow.shared.models.provider import model_factory
from winnow.shared.service.worker import PERMANENT_ERRORS
from winnow.shared.shards import SUCCESS, ImageSource, ShardWriter, shard_prefix


def test_an_image_source_outside_the_read_roots_is_refused_before_it_is_read(tmp_path):
    runs, outside = tmp_path / "runs", tmp_path / "outside"
    (outside / "shards").mkdir(parents=True)
    canary = outside / "shards" / "00000000.tar"
    canary.write_bytes(b"not a tar: the canary")
    ledger = shard_prefix(str(runs / "job" / "downloader"), 0)
    writer = ShardWriter(ledger, stage="downloader", job_id="job", shard_id=0, members="none",
                         image_source=ImageSource(str(canary)[: -len(".tar")]))
    writer.add({"key": "000000000", "uid": "0" * 32, "url": "http://x/y.jpg", "text": "a cat", "status": SUCCESS})
    writer.close()
    stage = SafetyStage(model_factory("text_toxicity", "offline"), model_factory("image_nsfw", "offline"),
                        SafetyOptions(toxicity_threshold=0.5, nsfw_threshold=0.5))
    stage.source_check = AccessPolicy(read_roots=(), write_roots=(str(runs),)).read
    ref = make_ref(job_id="job", shard_id=0, stage="downloader", uri=ledger, sample_count=1,
                   job_root=str(runs / "job"), shard_count=1)
    before = canary.stat().st_atime_ns
    with pytest.raises(AccessDenied) as refused:
        stage.process(ref)
    assert "image source" in str(refused.value) and "WINNOW_READ_ROOTS" in str(refused.value)
    assert isinstance(refused.value, PERMANENT_ERRORS), "dead-lettered at once, not retried"
    assert not (runs / "job" / "safety").exists() or not any((runs / "job" / "safety").iterdir())
    assert canary.stat().st_atime_ns == before
