"""The dedup stage with real perceptual hashes on real images: eval copies, exact and near duplicates."""

from __future__ import annotations

from pathlib import Path

import argparse

import pyarrow as pa
import pytest

from winnow.services.dedup.cli import build_index
from winnow.services.dedup.stage import DedupOptions, DedupStage
from winnow.shared.models.provider import model_factory
from winnow.shared.shards import read_stats, read_table


@pytest.fixture(scope="module")
def eval_index(eval_images, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("eval-index")
    build_index(argparse.Namespace(images=str(eval_images), out=str(out), model_preset="offline", threshold=None,
                                   batch_size=4))
    return str(out)


def _run(refs, eval_index):
    stage = DedupStage(model_factory("near_duplicate", "offline"), DedupOptions(eval_index_dir=eval_index))
    out = [stage.process(ref) for ref in refs]
    stage.teardown()
    return out


def test_copies_of_eval_images_and_duplicates_are_dropped_once(downloaded, curation_pool, eval_index):
    _, refs = downloaded
    out = _run(refs, eval_index)
    rows = {r["uid"]: r for r in pa.concat_tables([read_table(r.uri) for r in out],
                                                   promote_options="permissive").to_pylist()}
    uid = curation_pool["uid"]
    by_role = {role: rows[u] for role, u in uid.items()}
    assert (by_role["eval_copy"]["status"], by_role["eval_copy"]["reason"]) == ("dropped", "eval_duplicate")
    assert by_role["eval_copy"]["eval_match"] == "coffee.png"
    assert (by_role["exact_copy"]["reason"], by_role["exact_copy"]["duplicate_of"]) == ("exact_duplicate",
                                                                                       uid["original"])
    assert (by_role["near_copy"]["reason"], by_role["near_copy"]["duplicate_of"]) == ("near_duplicate",
                                                                                     uid["original"])
    assert by_role["original"]["status"] == "success", "the first of a group of duplicates is kept"
    dropped = {role for role, row in by_role.items() if row["status"] == "dropped"}
    assert dropped == {"eval_copy", "exact_copy", "near_copy"}
    reasons = sum((read_stats(r.uri).reasons for r in out), start=__import__("collections").Counter())
    assert reasons == {"eval_duplicate": 1, "exact_duplicate": 1, "near_duplicate": 1}


def test_reprocessing_gives_the_same_answers(downloaded, eval_index, tmp_path):
    import shutil

    _, refs = downloaded
    first = _run(refs, eval_index)
    before = [read_table(r.uri).to_pylist() for r in first]
    # Remove the outputs (not the registry) and run again: the registry's claims are per uid.
    for ref in first:
        assert not Path(ref.uri + ".tar").exists(), "dedup annotates: it writes no tar"
        for suffix in (".parquet", "_stats.json"):
            (tmp_path / "x").mkdir(exist_ok=True)
            shutil.move(ref.uri + suffix, tmp_path / "x" / (ref.uri.rsplit("/", 1)[-1] + suffix))
    again = _run(refs, eval_index)
    assert [read_table(r.uri).to_pylist() for r in again] == before


def test_an_index_built_with_another_descriptor_is_refused(eval_index, tmp_path):
    import json
    import shutil

    shutil.copytree(eval_index, tmp_path / "idx")
    meta = json.loads((tmp_path / "idx" / "eval.json").read_text())
    (tmp_path / "idx" / "eval.json").write_text(json.dumps({**meta, "descriptor": "isc21",
                                                            "descriptor_threshold": 0.604169}))
    stage = DedupStage(model_factory("near_duplicate", "offline"), DedupOptions(eval_index_dir=str(tmp_path / "idx")))
    with pytest.raises(ValueError, match="rebuild it"):
        stage.setup()


def test_a_row_without_a_usable_uid_costs_that_row_only(downloaded, eval_index):
    import pyarrow.parquet as pq

    _, refs = downloaded
    expected = [read_table(r.uri).to_pylist() for r in _run(refs, eval_index)]
    # Break the uid of one kept row (a pool written by hand, a shard from elsewhere), then judge again.
    target = refs[0]
    table = read_table(target.uri)
    uids = table["uid"].to_pylist()
    broken = next(i for i, status in enumerate(table["status"].to_pylist()) if status == "success")
    broken_uid, uids[broken] = uids[broken], None
    pq.write_table(table.set_column(table.schema.get_field_index("uid"), "uid", pa.array(uids, pa.string())),
                   target.uri + ".parquet")
    for ref in refs:  # fresh outputs and registry
        import shutil
        shutil.rmtree(f"{ref.job_root}/dedup", ignore_errors=True)
    out = _run(refs, eval_index)
    rows = read_table(out[0].uri).to_pylist()
    assert (rows[broken]["status"], rows[broken]["reason"]) == ("dropped", "invalid_uid")
    others = [r for i, r in enumerate(rows) if i != broken]
    assert [(r["uid"], r["status"], r["reason"]) for r in others] == \
        [(r["uid"], r["status"], r["reason"]) for i, r in enumerate(expected[0]) if i != broken]
    assert [read_table(r.uri).to_pylist() for r in out[1:]] == expected[1:]
    assert read_stats(out[0].uri).reasons["invalid_uid"] == 1
    assert broken_uid not in {r["uid"] for r in rows}


def test_a_uid_that_occurs_again_in_another_shard_is_kept_once(downloaded, curation_pool, eval_index, tmp_path):
    """Shards a user brings can repeat a uid (two downloads of one pool, merged); a DataComp subset
    lists uids, so the later occurrence is dropped, and reprocessing either shard says the same."""
    import shutil

    import pyarrow.parquet as pq

    _, refs = downloaded
    expected = [read_table(r.uri).to_pylist() for r in _run(refs, eval_index)]
    shutil.rmtree(f"{refs[0].job_root}/dedup")
    clip_art = [uid for role, uid in curation_pool["uid"].items() if role.startswith("clip_")]  # no copies of them
    kept = [[i for i, r in enumerate(rows) if r["status"] == "success" and r["uid"] in clip_art] for rows in expected]
    first, again = expected[0][kept[0][0]], kept[1][0]
    table = read_table(refs[1].uri)
    uids = table["uid"].to_pylist()
    uids[again] = first["uid"]
    pq.write_table(table.set_column(table.schema.get_field_index("uid"), "uid", pa.array(uids, pa.string())),
                   refs[1].uri + ".parquet")

    out = _run(refs, eval_index)
    rows = [read_table(r.uri).to_pylist() for r in out]
    assert (rows[1][again]["status"], rows[1][again]["reason"]) == ("dropped", "duplicate_uid")
    assert f"first occurs in shard {refs[0].shard_id}, sample {first['key']}" in rows[1][again]["error_message"]
    assert rows[0] == expected[0], "the first occurrence is judged as before"
    assert [(r["status"], r["reason"]) for i, r in enumerate(rows[1]) if i != again] == \
        [(r["status"], r["reason"]) for i, r in enumerate(expected[1]) if i != again]
    assert read_stats(out[1].uri).reasons["duplicate_uid"] == 1

    # Reprocessed (outputs gone, registry kept), in the other order: each occurrence keeps its answer.
    for ref in out:
        for suffix in (".parquet", "_stats.json"):
            Path(ref.uri + suffix).unlink()
    reprocessed = _run(list(reversed(refs)), eval_index)
    assert [read_table(r.uri).to_pylist() for r in reversed(reprocessed)] == rows


def test_workers_asking_at_once_share_one_registry(tmp_path):
    """``winnow run`` gives dedup two workers; their first batches used to open a registry each, and
    the second one's writes waited on the first's transaction ("database is locked") while its
    index never saw the other's kept images."""
    import threading

    import numpy as np

    stage = DedupStage(model_factory("near_duplicate", "offline"), DedupOptions())
    stage.setup()
    hashes = np.where(np.random.default_rng(0).random((1, stage.descriptor.dim)) > 0.5, 1.0, -1.0).astype(np.float32)
    at_once = threading.Barrier(8)
    got = []

    def ask() -> None:
        at_once.wait()
        got.append(stage.registry("job-1", str(tmp_path), hashes))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 8 and len({id(registry) for registry in got}) == 1
    stage.teardown()
