"""The claim log: exactly one file keeps each pair, even when two replicas append at once."""

from __future__ import annotations

import pytest

from winnow.services.downloader.pool import generate_uid
from winnow.services.extractor import claims
from winnow.services.extractor.claims import ClaimLog


def uids(*names: str) -> list[str]:
    return [generate_uid(f"http://x.example/{name}.jpg", name) for name in names]


@pytest.fixture(params=["local", "s3"])
def job_root(request, tmp_path):
    return request.getfixturevalue("s3_bucket") + "/job" if request.param == "s3" else str(tmp_path / "job")


def test_a_replica_that_loses_the_race_for_a_position_reads_the_winner_and_takes_the_next(job_root, monkeypatch):
    first, second = ClaimLog(job_root), ClaimLog(job_root)
    real_create = claims.create_exclusive
    created = []

    def create_after_the_other_replica(uri, data):
        if not created:  # between the second replica's read of the log and its append, the first appends
            created.append(uri)
            assert first.claim(0, "a.warc.gz", uids("a", "b", "c")) == [True, True, True]
        return real_create(uri, data)

    monkeypatch.setattr(claims, "create_exclusive", create_after_the_other_replica)
    assert second.claim(1, "b.warc.gz", uids("b", "c", "d")) == [False, False, True]
    monkeypatch.undo()
    # A third replica, and the first one again, see the same log in the same order.
    third = ClaimLog(job_root)
    assert third.claim(2, "c.warc.gz", uids("a", "d", "e")) == [False, False, True]
    assert first.claim(3, "d.warc.gz", uids("e", "f")) == [False, True]


def test_a_file_claimed_before_gets_the_same_answer_again(job_root):
    ClaimLog(job_root).claim(0, "a.warc.gz", uids("a", "b"))
    ClaimLog(job_root).claim(1, "b.warc.gz", uids("b", "c"))
    again = ClaimLog(job_root)
    assert again.claim(1, "b.warc.gz", uids("b", "c")) == [False, True]
    assert again.claim(0, "a.warc.gz", uids("a", "b")) == [True, True]


def test_many_claims_stay_exact_as_the_runs_merge(tmp_path):
    log = ClaimLog(str(tmp_path / "job"))
    everything = set()
    for shard in range(40):
        names = [f"{shard}-{i}" for i in range(50)] + [f"shared-{i}" for i in range(shard, shard + 30)]
        keep = log.claim(shard, f"{shard}.warc.gz", uids(*names))
        new = {name for name, kept in zip(names, keep) if kept}
        assert new == set(names) - everything
        everything |= set(names)
