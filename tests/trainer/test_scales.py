"""The training scales are DataComp's, number for number, plus winnow's tiny one."""

from __future__ import annotations

import dataclasses
import json

import pytest

from winnow.services.trainer.scales import DATACOMP_SCALES, Scale, available_scales, load_scale

# DataComp's scale_configs.py (mlfoundations/datacomp), verbatim:
# name: (model, train_num_samples, batch_size, learning_rate, warmup, beta2)
DATACOMP = {
    "debug": ("ViT-B-32", 128_000, 1024, 1e-4, 500, None),
    "small": ("ViT-B-32", 12_800_000, 4096, 5e-4, 500, None),
    "medium": ("ViT-B-32", 128_000_000, 4096, 5e-4, 500, None),
    "large": ("ViT-B-16", 1_280_000_000, 8192, 5e-4, 500, None),
    "xlarge": ("ViT-L-14", 12_800_000_000, 90112, 1e-3, 10000, 0.95),
}


@pytest.mark.parametrize("name", DATACOMP)
def test_datacomp_scales_are_datacomps_numbers(name):
    scale = load_scale(name)
    model, samples, batch, lr, warmup, beta2 = DATACOMP[name]
    assert (scale.model, scale.samples_seen, scale.batch_size, scale.learning_rate, scale.warmup, scale.beta2) == (
        model, samples, batch, lr, warmup, beta2)
    assert scale.datacomp_config() == {"batch_size": batch, "learning_rate": lr, "train_num_samples": samples,
                                       "warmup": warmup, "model": model, "beta2": beta2}


def test_named_scales_in_order_of_size_then_winnows():
    assert available_scales() == [*DATACOMP_SCALES, "tiny"]
    assert tuple(DATACOMP) == DATACOMP_SCALES


def test_tiny_scale_trains_winnows_small_architecture():
    import open_clip

    from winnow.shared.models.clip import register_winnow_configs

    tiny = load_scale("tiny")
    register_winnow_configs()
    assert tiny.model in open_clip.list_models()
    assert (tiny.batch_size, tiny.learning_rate, tiny.warmup, tiny.beta2) == (32, 5e-4, 10, None)
    assert 1_000 <= tiny.samples_seen <= 10_000  # a few thousand: about a minute on two CPU cores


def test_scale_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_scale("small").batch_size = 1


def test_custom_scale_from_a_json_file(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"model": "ViT-B-32", "samples_seen": 1000, "batch_size": 8,
                                "learning_rate": 1e-3, "warmup": 5}))
    scale = load_scale(str(path))
    assert scale == Scale(name="mine", model="ViT-B-32", samples_seen=1000, batch_size=8, learning_rate=1e-3,
                          warmup=5, beta2=None)


def test_unknown_scale_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown scale 'huge'.*debug, small, medium, large, xlarge, tiny"):
        load_scale("huge")


def test_missing_scale_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_scale(str(tmp_path / "nope.json"))


@pytest.mark.parametrize("fields, message", [
    ({"model": "ViT-B-32", "samples_seen": 10, "batch_size": 8, "learning_rate": 1e-3, "warmup": 5, "lr": 1},
     r"unknown fields \['lr'\]"),
    ({"model": "ViT-B-32", "batch_size": 8, "learning_rate": 1e-3, "warmup": 5}, r"missing fields \['samples_seen'\]"),
    ({"model": "ViT-B-32", "samples_seen": 0, "batch_size": 8, "learning_rate": 1e-3, "warmup": 5},
     "samples_seen must be a positive integer"),
    ({"model": "ViT-B-32", "samples_seen": 10, "batch_size": 8.5, "learning_rate": 1e-3, "warmup": 5},
     "batch_size must be a positive integer"),
    ({"model": "ViT-B-32", "samples_seen": 10, "batch_size": 8, "learning_rate": -1, "warmup": 5},
     "learning_rate must be a positive number"),
    ({"model": "ViT-B-32", "samples_seen": 10, "batch_size": 8, "learning_rate": 1e-3, "warmup": 5, "beta2": 1.5},
     r"beta2 must be in \(0, 1\)"),
])
def test_bad_scale_files_say_what_is_wrong(tmp_path, fields, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(fields))
    with pytest.raises(ValueError, match=message):
        load_scale(str(path))
