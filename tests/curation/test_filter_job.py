"""The filter stage acts once per job and publishes its result once, however many late messages come."""

from __future__ import annotations

import json

from winnow.services.filter.apply import FilterConfig
from winnow.services.filter.stage import FilterOptions, FilterStage
from winnow.shared.messages import make_ref


def _ref(manifest, shard_id: int):
    return make_ref(job_id=manifest.job_id, shard_id=shard_id, stage="downloader", uri="unused",
                    sample_count=0, job_root=manifest.job_root, shard_count=manifest.shard_count)


def test_the_result_is_published_once_per_job(downloaded):
    manifest, refs = downloaded
    assert manifest.shard_count >= 2
    stage = FilterStage(FilterOptions(FilterConfig(name="no_filter", metadata_dir=""), shard_size=100))
    last = manifest.shard_count - 1
    result = stage.process(_ref(manifest, last))  # the message that finds the job complete
    assert result is not None and result.stage == "reshard"
    assert result.sample_count == sum(json.loads(open(r.uri + "_stats.json").read())["successes"] for r in refs)
    # Late copies of the other shards' messages (at-least-once upstream) publish nothing ...
    assert [stage.process(_ref(manifest, i)) for i in range(last)] == [None] * last
    # ... while a redelivery of the completing message (a crash before its publish) publishes again.
    again = stage.process(_ref(manifest, last))
    assert again == result
    assert result.sample_count > 0
