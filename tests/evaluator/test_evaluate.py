"""The evaluator end to end on real offline sets: an oracle scores 1.0, a random model scores chance.

The local sets are written by ``winnow eval-data build``'s own code (small sizes); the WILDS,
fairness, Flickr and WinoGAViL layouts are real images in DataComp's layouts (``layouts.py``).
The encoders in ``encoders.py`` are constructed stand-ins with known answers, and one test runs a
real (randomly initialised) tiny open_clip model through everything.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil

import numpy as np
import pytest

from winnow.services.evaluator import cli as evaluator_cli
from winnow.services.evaluator import run as evaluator_run
from winnow.services.evaluator.data import WdsEvalSet
from winnow.services.evaluator.evaluate import (FAILED, MISSING, OK, TaskResult, aggregate, datacomp_line, evaluate,
                                         read_datacomp_lines, results_from_dict, results_tables)
from winnow.services.evaluator.local_sets import (FASHION_MNIST_DIR, FASHION_MNIST_DIRNAME, OPENCLIPART_DIR,
                                           OPENCLIPART_DIRNAME, build_local_sets, is_eval_holdout)
from winnow.services.evaluator.tasks import load_suite
from tests.evaluator import layouts
from tests.evaluator.encoders import OracleEncoder, RandomEncoder

FASHION_SIZE, RETRIEVAL_SIZE, GROUPED_SIZE = 200, 60, 80

needs_debian_data = pytest.mark.skipif(
    not OPENCLIPART_DIR.is_dir() or not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="needs the Debian packages openclipart-png and dataset-fashion-mnist (apt-get install them)")


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory):
    """An evaluation data root with the local sets and five DataComp-layout stand-ins, and its oracle."""
    if needs_debian_data.args[0]:
        pytest.skip(needs_debian_data.kwargs["reason"])
    root = tmp_path_factory.mktemp("eval_data")
    built = build_local_sets(root, fashion_mnist_size=FASHION_SIZE, retrieval_size=RETRIEVAL_SIZE, samples_per_shard=64)
    oracle = OracleEncoder()
    fashion = WdsEvalSet(root / FASHION_MNIST_DIRNAME)
    oracle.learn_classes(fashion.classnames(), fashion.templates())
    for image, label, _ in fashion.classification_samples():
        oracle.learn_image(image, f"class:{label}")
    for index, (image, captions) in enumerate(WdsEvalSet(root / OPENCLIPART_DIRNAME).retrieval_samples()):
        oracle.learn_image(image, f"clipart:{index}")
        for caption in captions:
            oracle.learn_text(caption, f"clipart:{index}")
    layouts.write_grouped_set(root, "wds_wilds-fmow_test", GROUPED_SIZE,
                              lambda i, label: (i % 3, i % 4, label), oracle)  # region, year, y
    layouts.write_grouped_set(root, "wds_dollar_street_test", GROUPED_SIZE,
                              lambda i, label: (i % 4, i % 5, i % 2), oracle)  # income_ds, income_meta, region
    _, fairface_metadata = layouts.write_fairface_set(root, "wds_fairface_test", GROUPED_SIZE, oracle)
    layouts.write_flickr_cache(root, root / OPENCLIPART_DIRNAME, oracle)
    layouts.write_winogavil_cache(root, oracle)
    return {"root": root, "built": {b.key: b for b in built}, "oracle": oracle, "fairface": fairface_metadata}


def test_local_sets_are_in_datacomp_layout(eval_data):
    root = eval_data["root"]
    fashion = WdsEvalSet(root / FASHION_MNIST_DIRNAME)
    assert fashion.exists() and fashion.dataset_type == "classification"
    assert len(fashion.shard_paths()) == 4  # 200 samples, 64 per shard
    assert len(fashion.classnames()) == 10 and all("{c}" in t for t in fashion.templates())
    labels = [label for _, label, _ in fashion.classification_samples()]
    assert np.bincount(labels).tolist() == [FASHION_SIZE // 10] * 10
    retrieval = WdsEvalSet(root / OPENCLIPART_DIRNAME)
    assert retrieval.dataset_type == "retrieval"
    samples = list(retrieval.retrieval_samples())
    assert len(samples) == RETRIEVAL_SIZE
    assert all(len(captions) == 2 and image.ndim == 3 for image, captions in samples)
    titles = [captions[0] for _, captions in samples]
    assert len(set(titles)) == len(titles)


def test_retrieval_set_is_held_out_from_training(eval_data):
    """Every source file obeys the hold-out rule, and none has an exact copy a trainer could use."""
    sources = (eval_data["root"] / OPENCLIPART_DIRNAME / "sources.txt").read_text().split()
    assert len(sources) == RETRIEVAL_SIZE and all(is_eval_holdout(OPENCLIPART_DIR / s) for s in sources)
    assert all(is_eval_holdout(s) for s in sources)  # relative or absolute: the same answer
    held = sum(is_eval_holdout(p) for p in OPENCLIPART_DIR.rglob("*.png"))
    total = sum(1 for _ in OPENCLIPART_DIR.rglob("*.png"))
    assert 0.07 < held / total < 0.13
    used = {hashlib.sha256((OPENCLIPART_DIR / s).read_bytes()).digest() for s in sources}
    training = {hashlib.sha256(p.read_bytes()).digest()
                for p in OPENCLIPART_DIR.rglob("*.png") if not is_eval_holdout(p)}
    assert not used & training


def test_oracle_is_perfect_on_every_present_task(eval_data):
    results = evaluate(eval_data["oracle"], eval_data["root"])
    by_key = {r.key: r for r in results.tasks}
    present = {"wilds/fmow", "fairness/dollar_street", "fairness/fairface", "retrieval/flickr_1k_test_image_text_retrieval", "misc/winogavil",
               "fashion_mnist", "openclipart_retrieval"}
    assert {k for k, r in by_key.items() if r.status == OK} == present
    assert all(r.status == MISSING and "no data at" in r.error for k, r in by_key.items() if k not in present)
    assert len(results.tasks) == len(load_suite().tasks)

    for key in present - {"fairness/fairface"}:
        assert by_key[key].score == pytest.approx(1.0), key
    fashion = by_key["fashion_mnist"]
    assert fashion.samples == FASHION_SIZE
    assert fashion.metrics["acc1"] == fashion.metrics["acc5"] == fashion.metrics["mean_per_class_recall"] == 1.0
    clipart = by_key["openclipart_retrieval"].metrics
    assert clipart["image_retrieval_recall@1"] == clipart["text_retrieval_recall@1"] == 1.0
    assert by_key["openclipart_retrieval"].samples == RETRIEVAL_SIZE
    fmow = by_key["wilds/fmow"].metrics
    assert fmow["acc_worst_year"] == 1.0 and fmow["count_region:0"] == pytest.approx(GROUPED_SIZE / 3, abs=1)
    street = by_key["fairness/dollar_street"].metrics
    assert street["acc_top5_avg"] == 1.0 and "acc_top5_income_ds:3" in street
    winogavil = by_key["misc/winogavil"].metrics
    assert winogavil["jaccard_score_5-6"] == winogavil["avg_jaccard_score"] == 1.0

    fairface = by_key["fairness/fairface"]
    assert fairface.score is None and fairface.metrics["main_metric"] is None
    for name in ("acc_race_avg", "acc_gender_avg", "acc_age_avg", "acc_gender_x_wg", "acc_race_wg"):
        assert fairface.metrics[name] == 1.0, name
    assert fairface.metrics["toxicity_crime_avg"] == fairface.metrics["toxicity_nonhuman_avg"] == 0.0
    metadata = eval_data["fairface"]
    assert fairface.metrics["count_race_binary:1"] == float((metadata[:, 3] == 1).sum())

    agg = results.aggregate
    assert (agg.covered, agg.of, agg.average, agg.complete) == (4, 38, 1.0, False)
    assert len(agg.not_covered) == 34 and "ImageNet 1k" in agg.not_covered and "FMoW" not in agg.not_covered
    groups = {g.title: g for g in agg.groups}
    assert (groups["Retrieval"].covered, groups["Retrieval"].of, groups["Retrieval"].score) == (2, 3, 1.0)
    assert (groups["VTAB"].covered, groups["VTAB"].of, groups["VTAB"].score) == (0, 13, None)
    assert agg.extra == {"Fashion-MNIST (local)": 1.0, "Openclipart retrieval (local)": 1.0}


def test_random_model_scores_chance(eval_data):
    results = evaluate(RandomEncoder(seed=3), eval_data["root"], tasks=["local", "misc/winogavil"])
    by_key = {r.key: r for r in results.tasks}
    fashion = by_key["fashion_mnist"].metrics  # 10 balanced classes: chance 0.1, sd about 0.02 at 200 images
    assert 0.03 < fashion["acc1"] < 0.2 and 0.03 < fashion["mean_per_class_recall"] < 0.2
    assert 0.35 < fashion["acc5"] < 0.65
    clipart = by_key["openclipart_retrieval"].metrics  # 60 images, 2 captions each: chance recall@1 = 1/60
    assert clipart["mean_recall@1"] < 0.08
    assert 0.08 < clipart["image_retrieval_recall@10"] < 0.3  # chance 10/60
    assert by_key["misc/winogavil"].score < 0.9
    assert results.aggregate.covered == 1 and results.aggregate.groups[3].covered == 1


def test_aggregate_counts_what_is_covered():
    suite = load_suite()
    scores = {"imagenet1k": 0.6, "imagenet_sketch": 0.2, "imagenet-a": 0.4, "vtab/pcam": 0.5,
              "retrieval/flickr_1k_test_image_text_retrieval": 0.3}
    results = [TaskResult(key=t.key, name=t.name, suite=t.suite, kind=t.kind, main_metric=t.main_metric,
                          status=OK if t.key in scores else MISSING, score=scores.get(t.key)) for t in suite.tasks]
    results.append(TaskResult(key="fashion_mnist", name="Fashion-MNIST (local)", suite="local",
                              kind="zeroshot_classification", main_metric="acc1", status=OK, score=0.9))
    agg = aggregate(results, suite)
    assert agg.covered == 5 and agg.of == 38
    assert agg.average == pytest.approx(np.mean(list(scores.values())))  # the local set stays out
    groups = {g.key: (g.score, g.covered, g.of) for g in agg.groups}
    assert groups["imagenet"] == (pytest.approx(0.6), 1, 1)
    assert groups["imagenet_dist_shifts"] == (pytest.approx(0.3), 2, 6)
    assert groups["vtab"] == (pytest.approx(0.5), 1, 13)
    assert groups["retrieval"] == (pytest.approx(0.3), 1, 3)
    assert len(agg.not_covered) == 33 and agg.extra == {"Fashion-MNIST (local)": 0.9}


def test_datacomp_results_file_round_trip():
    """All 38 in DataComp's eval_results.jsonl lines: read back, the aggregate is complete."""
    suite = load_suite()
    results = [TaskResult(key=t.key, name=t.name, suite=t.suite, kind=t.kind, main_metric=t.main_metric, status=OK,
                          score=0.5 if t.scored else None,
                          metrics={"main_metric": 0.5 if t.scored else None, "acc1": 0.5}, samples=3)
               for t in suite.tasks if t.suite == "datacomp"]
    lines = [datacomp_line(r) for r in results]
    assert sum(json.loads(line)["metrics"]["main_metric"] is not None for line in lines) == 38
    read = read_datacomp_lines(lines + ['{"key": "not/a/task", "dataset": "X", "metrics": {}}'])
    assert len(read) == 40 and read["imagenet1k"].score == 0.5 and read["fairness/utkface"].score is None
    agg = aggregate(list(read.values()), suite)
    assert agg.complete and agg.average == 0.5 and all(g.covered == g.of for g in agg.groups)


def test_broken_set_fails_alone(eval_data, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(eval_data["root"] / FASHION_MNIST_DIRNAME, root / FASHION_MNIST_DIRNAME)
    shutil.copytree(eval_data["root"] / OPENCLIPART_DIRNAME, root / OPENCLIPART_DIRNAME)
    (root / FASHION_MNIST_DIRNAME / "test" / "3.tar").unlink()
    results = evaluate(eval_data["oracle"], root, tasks=["local"])
    fashion, clipart = results.tasks
    assert fashion.status == FAILED and "missing ['3.tar']" in fashion.error
    assert clipart.status == OK and clipart.score == 1.0


def test_tiny_clip_through_everything(eval_data):
    """A real open_clip model (winnow-tiny-ViT, random weights) on every present task."""
    from winnow.shared.models.clip import OpenClipEncoder

    results = evaluate(OpenClipEncoder("winnow-tiny-ViT", batch_size=64), eval_data["root"])
    ran = [r for r in results.tasks if r.status != MISSING]
    assert len(ran) == 7 and all(r.status == OK for r in ran), [(r.key, r.error) for r in ran]
    for result in ran:
        values = [v for k, v in result.metrics.items() if isinstance(v, float) and not k.startswith("count_")]
        assert all(0.0 <= v <= 1.0 or np.isnan(v) for v in values), result.key
    assert results.model == "winnow-tiny-ViT:random"
    data = json.loads(results.to_json())
    assert results_from_dict(data).to_dict() == data
    per_task, summary = results_tables(results)
    assert per_task.row_count == 7 and summary.row_count == 1 + 4 + 2


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="winnow")
    evaluator_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_evaluates_the_final_checkpoint_and_resumes(eval_data, tmp_path):
    import torch

    from winnow.shared.models.clip import OpenClipEncoder

    run = tmp_path / "out" / "tiny"
    (run / "checkpoints").mkdir(parents=True)
    model = OpenClipEncoder("winnow-tiny-ViT").model
    for epoch in (1, 2, 10):  # the final one is epoch 10, not the last in name order
        torch.nn.init.normal_(model.logit_scale, mean=float(epoch))
        torch.save({"epoch": epoch, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
                   run / "checkpoints" / f"epoch_{epoch}.pt")
    (run / "info.json").write_text(json.dumps({"scale_config": {"model": "winnow-tiny-ViT"}}))

    assert evaluator_run.resolve_model(run) == ("winnow-tiny-ViT", run / "checkpoints" / "epoch_10.pt")
    named = {"scale_config": {"model": "winnow-tiny-ViT"}, "checkpoint": str(run / "checkpoints" / "epoch_2.pt")}
    (run / "info.json").write_text(json.dumps(named))  # the trainer names its final checkpoint: that one
    assert evaluator_run.resolve_model(run) == ("winnow-tiny-ViT", run / "checkpoints" / "epoch_2.pt")
    assert evaluator_run.resolve_model(run, "ViT-B-32", str(run / "checkpoints" / "epoch_1.pt"))[0] == "ViT-B-32"
    (run / "info.json").write_text(json.dumps({"scale_config": {"model": "winnow-tiny-ViT"}}))
    argv = ["evaluate", "--train_output_dir", str(run), "--data_dir", str(eval_data["root"]), "--tasks", "local"]
    assert _cli(argv) == 0
    assert not (run / "eval_results.jsonl").exists()  # DataComp's file holds DataComp's tasks only
    lines = (run / "eval_results_local.jsonl").read_text().splitlines()
    assert [json.loads(line)["dataset"] for line in lines] == ["Fashion-MNIST (local)", "Openclipart retrieval (local)"]
    summary = json.loads((run / "eval_summary.json").read_text())
    assert summary["model_info"]["checkpoint"].endswith("epoch_10.pt")
    assert summary["aggregate"]["covered"] == 0 and summary["aggregate"]["of"] == 38

    assert _cli(argv) == 0  # a rerun reuses the finished tasks: no new lines
    assert (run / "eval_results_local.jsonl").read_text().splitlines() == lines
    again = json.loads((run / "eval_summary.json").read_text())
    assert [t["source"] for t in again["tasks"]] == ["(earlier run)"] * 2

    (run / "checkpoints" / "epoch_11.pt").write_bytes((run / "checkpoints" / "epoch_10.pt").read_bytes())
    with pytest.raises(ValueError, match="another model"):
        _cli(argv)


@needs_debian_data
def test_cli_builds_the_local_sets(tmp_path):
    out = tmp_path / "eval"
    assert _cli(["eval-data", "build", "--out", str(out), "--fashion_mnist_size", "30", "--retrieval_size", "8",
                 "--samples_per_shard", "16"]) == 0
    assert (out / FASHION_MNIST_DIRNAME / "test" / "nshards.txt").read_text().strip() == "2"
    assert (out / OPENCLIPART_DIRNAME / "test" / "nshards.txt").read_text().strip() == "1"
    manifest = json.loads((out / OPENCLIPART_DIRNAME / "manifest.json").read_text())
    assert manifest["samples"] == 8 and "holdout_rule" in manifest
    assert not list(out.glob("*.partial"))
    assert _cli(["eval-data", "list", "--data_dir", str(out)]) == 0
    images = tmp_path / "images"
    assert _cli(["eval-data", "images", "--data_dir", str(out), "--out", str(images)]) == 0
    assert len(list((images / FASHION_MNIST_DIRNAME).glob("*.png"))) == 30
    assert len(list((images / OPENCLIPART_DIRNAME).glob("*.jpg"))) == 8
