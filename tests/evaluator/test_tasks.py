"""The task suite is DataComp's: tasklist.yml's 38 scored tasks and 2 fairness sets, aggregate_scores.py's groups."""

from __future__ import annotations

import copy
import json

import pytest

from winnow.services.evaluator.tasks import TASKS_JSON, load_suite, parse_suite

# tasklist.yml's main_metric where it is not the default acc1
NOT_ACC1 = {
    "vtab/caltech101": "mean_per_class_recall",
    "fgvc_aircraft": "mean_per_class_recall",
    "vtab/flowers": "mean_per_class_recall",
    "vtab/pets": "mean_per_class_recall",
    "retrieval/flickr_1k_test_image_text_retrieval": "mean_recall@1",
    "retrieval/mscoco_2014_5k_test_image_text_retrieval": "mean_recall@1",
    "misc/winogavil": "jaccard_score_10-12",
    "wilds/iwildcam": "F1-macro_all",
    "wilds/fmow": "acc_worst_region",
    "fairness/dollar_street": "acc_top5_wg",
    "fairness/geode": "acc_wg",
}
# aggregate_scores.py's DATASET_GROUPS (by display name), plus ImageNet
GROUPS = {
    "ImageNet": {"ImageNet 1k"},
    "ImageNet dist. shifts": {"ImageNet Sketch", "ImageNet v2", "ImageNet-A", "ImageNet-O", "ImageNet-R", "ObjectNet"},
    "VTAB": {"Caltech-101", "CIFAR-100", "CLEVR Counts", "CLEVR Distance", "Describable Textures", "EuroSAT",
             "KITTI Vehicle Distance", "Oxford Flowers-102", "Oxford-IIIT Pet", "PatchCamelyon", "RESISC45", "SVHN",
             "SUN397"},
    "Retrieval": {"Flickr", "MSCOCO", "WinoGAViL"},
}


@pytest.fixture(scope="module")
def suite():
    return load_suite()


def test_38_scored_tasks_and_the_fairness_sets_beside_them(suite):
    assert len(suite.scored) == 38
    datacomp = [t for t in suite.tasks if t.suite == "datacomp"]
    assert len(datacomp) == 40
    unscored = [t.name for t in datacomp if not t.scored]
    assert unscored == ["FairFace", "UTKFace"]
    assert all(t.kind == "fairness" and t.main_metric is None for t in datacomp if not t.scored)
    assert [t.key for t in suite.extra if t.suite == "local"] == ["fashion_mnist", "openclipart_retrieval"]
    assert len({t.name for t in suite.tasks}) == len(suite.tasks)


def test_main_metrics_are_tasklists(suite):
    for task in suite.scored:
        assert task.main_metric == NOT_ACC1.get(task.key, "acc1"), task.key
    assert sum(t.main_metric == "acc1" for t in suite.scored) == 27


def test_kinds(suite):
    kinds = {}
    for task in suite.tasks:
        if task.suite == "datacomp":
            kinds.setdefault(task.kind, []).append(task.key)
    assert len(kinds["zeroshot_classification"]) == 30
    assert sorted(kinds["retrieval"]) == ["retrieval/flickr_1k_test_image_text_retrieval", "retrieval/mscoco_2014_5k_test_image_text_retrieval"]
    assert kinds["association"] == ["misc/winogavil"]
    assert kinds["wilds"] == ["wilds/iwildcam", "wilds/camelyon17", "wilds/fmow"]
    assert kinds["fairness"] == ["fairness/dollar_street", "fairness/geode", "fairness/fairface", "fairness/utkface"]
    assert suite.get("wilds/fmow").grouping.metadata_fields == ("region", "year", "y")
    assert suite.get("fairness/dollar_street").grouping.group_by == ("income_ds",)
    assert suite.get("fairness/dollar_street").grouping.metric == "acc_top5"


def test_groups_are_aggregate_scores(suite):
    groups = {g.title: {suite.get(key).name for key in g.tasks} for g in suite.groups}
    assert groups == GROUPS
    vtab_tags = {t.name for t in suite.tasks if any(tag.startswith("vtab_") for tag in t.tags)}
    assert vtab_tags == GROUPS["VTAB"]


def test_folders_follow_download_evalsets(suite):
    assert suite.get("vtab/cifar100").wds_dir == "wds_vtab-cifar100_test"
    assert suite.get("imagenet1k").wds_dir == "wds_imagenet1k_test"
    assert suite.get("wilds/fmow").wds_dir == "wds_wilds-fmow_test"
    assert suite.get("fairness/geode").wds_dir == "wds_geode_test"  # fairness/ is dropped
    assert suite.get("retrieval/flickr_1k_test_image_text_retrieval").hf_dataset == \
        "nlphuji/flickr_1k_test_image_text_retrieval"
    assert suite.get("misc/winogavil").hf_dataset == "nlphuji/winogavil"
    sizes = {t.name: t.size for t in suite.scored}
    assert sizes["ImageNet 1k"] == 50000 and sizes["SUN397"] == 108754 and sizes["KITTI Vehicle Distance"] == 711


def test_select_by_key_name_or_suite(suite):
    assert [t.key for t in suite.select(["CIFAR-100", "imagenet1k"])] == ["vtab/cifar100", "imagenet1k"]
    assert len(suite.select(["datacomp"])) == 40
    assert [t.key for t in suite.select(["local"])] == ["fashion_mnist", "openclipart_retrieval"]
    assert suite.select(None) == suite.tasks
    with pytest.raises(ValueError, match="unknown evaluation task 'imagenet-z'"):
        suite.select(["imagenet-z"])


def test_bad_task_lists_are_refused():
    document = json.loads(TASKS_JSON.read_text())
    broken = copy.deepcopy(document)
    broken["tasks"][0]["kind"] = "captioning"
    with pytest.raises(ValueError, match="kind 'captioning'"):
        parse_suite(broken)
    broken = copy.deepcopy(document)
    broken["groups"][0]["tasks"].append("fashion_mnist")
    with pytest.raises(ValueError, match="not scored"):
        parse_suite(broken)
    broken = copy.deepcopy(document)
    broken["tasks"][1]["main_metrc"] = "acc1"
    with pytest.raises(ValueError, match="unknown fields"):
        parse_suite(broken)


# DataComp's tasklist.yml (mlfoundations/datacomp, as it is since May 2023), in its order, with the
# tags that are not empty: winnow's suite must list the same tasks, so that eval_results.jsonl has
# the lines DataComp's aggregate_scores.py expects.
DATACOMP_TASKLIST = [
    "vtab/caltech101", "cifar10", "vtab/cifar100", "vtab/clevr_count_all", "vtab/clevr_closest_object_distance",
    "country211", "vtab/dtd", "vtab/eurosat", "fgvc_aircraft", "food101", "gtsrb", "imagenet1k", "imagenet_sketch",
    "imagenetv2", "imagenet-a", "imagenet-o", "imagenet-r", "vtab/kitti_closest_vehicle_distance", "mnist",
    "objectnet", "vtab/flowers", "vtab/pets", "voc2007", "vtab/pcam", "renderedsst2", "vtab/resisc45", "cars",
    "stl10", "sun397", "vtab/svhn", "retrieval/flickr_1k_test_image_text_retrieval",
    "retrieval/mscoco_2014_5k_test_image_text_retrieval", "misc/winogavil", "wilds/iwildcam", "wilds/camelyon17",
    "wilds/fmow", "fairness/dollar_street", "fairness/geode", "fairness/fairface", "fairness/utkface"]
DATACOMP_TAGS = {
    "imagenet1k": ("val_task",),
    "retrieval/flickr_1k_test_image_text_retrieval": ("retrieval",),
    "retrieval/mscoco_2014_5k_test_image_text_retrieval": ("retrieval",),
    "misc/winogavil": ("retrieval",),
    **{key: ("wilds",) for key in ("wilds/iwildcam", "wilds/camelyon17", "wilds/fmow")},
    **{key: ("fairness",) for key in ("fairness/dollar_street", "fairness/geode", "fairness/fairface",
                                      "fairness/utkface")},
}


def test_the_task_list_is_datacomps_current_one(suite):
    datacomp = [t for t in suite.tasks if t.suite == "datacomp"]
    assert [t.key for t in datacomp] == DATACOMP_TASKLIST
    assert {t.key: t.tags for t in datacomp if t.tags and not t.tags[0].startswith("vtab_")} == DATACOMP_TAGS
    flickr = suite.get("Flickr")
    assert (flickr.key, flickr.size, flickr.hf_dataset, flickr.wds_dir) == (
        "retrieval/flickr_1k_test_image_text_retrieval", 1000, "nlphuji/flickr_1k_test_image_text_retrieval",
        "wds_retrieval-flickr_1k_test_image_text_retrieval_test")
