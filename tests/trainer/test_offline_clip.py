"""The offline CLIP's training set: real openclipart pairs, none of them held out for evaluation."""

from __future__ import annotations

import webdataset as wds

from winnow.services.evaluator.local_sets import is_eval_holdout
from winnow.services.trainer.offline_clip import OPENCLIPART_DIR, build_openclipart_training_set
from winnow.shared.shards import read_table


def test_the_training_set_excludes_the_evaluation_hold_out(tmp_path):
    built = build_openclipart_training_set(tmp_path / "set", per_shard=40, limit=100)
    assert (built.samples, built.shards) == (100, 3)
    rows = [row for i in range(3) for row in read_table(str(tmp_path / "set" / f"{i:08d}")).to_pylist()]
    assert len(rows) == 100 and all(row["text"] for row in rows)
    held_out = {p.as_uri() for p in OPENCLIPART_DIR.rglob("*.png") if is_eval_holdout(p)}
    assert held_out, "the hold-out is not empty"
    assert not held_out & {row["url"] for row in rows}, "no held-out image is trained on"
    dataset = wds.WebDataset(str(tmp_path / "set" / "{00000000..00000002}.tar"), shardshuffle=False).decode("pil")
    images = [sample["jpg"] for sample in dataset]
    assert len(images) == 100 and images[0].size == (64, 64)
