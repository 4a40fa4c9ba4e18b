"""Model presets resolve through one factory; production presets read the fetched files."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from winnow.ops import models_cli
from winnow.shared.models.registry import KINDS, all_presets, load_model, preset


def test_every_kind_has_an_offline_preset_that_loads_and_works():
    for kind in KINDS:
        model = load_model(kind, "offline")
        assert model.name
    toxicity = load_model("text_toxicity", "offline")
    assert toxicity.score(["a red bicycle", "you are a stupid idiot"]).shape == (2,)


def test_production_presets_read_weights_from_the_models_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WINNOW_MODELS_DIR", str(tmp_path))
    arguments = preset("text_toxicity", "production").arguments()
    assert arguments["checkpoint"] == f"{tmp_path}/multilingual_debiased-0b549669.ckpt"
    assert arguments["tokenizer_dir"] == f"{tmp_path}/xlm-roberta-base"
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_model("near_duplicate", "production")
    assert models_cli.weights_present(preset("near_duplicate", "production")).startswith("no: winnow models fetch")


def test_unknown_names_get_clear_errors():
    with pytest.raises(ValueError, match="unknown model kind"):
        preset("colour", "offline")
    with pytest.raises(ValueError, match="unknown text_toxicity preset 'huge'"):
        preset("text_toxicity", "huge")


def test_the_triton_repository_covers_every_offline_preset(tmp_path):
    models_cli.write_repository(argparse.Namespace(out=str(tmp_path), preset="offline", clip_model=[]))
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(p.triton_model for p in all_presets() if p.preset == "offline")
    for name in written:
        assert (tmp_path / name / "config.pbtxt").read_text().count('backend: "python"') == 1
        assert (tmp_path / name / "1" / "model.py").exists()
    assert np.isclose(load_model("near_duplicate", "offline").threshold,
                      float(_parameter(tmp_path / "near_duplicate_phash" / "config.pbtxt", "winnow_threshold")))


def _parameter(config, key: str) -> str:
    text = config.read_text()
    after = text[text.index(f'key: "{key}"'):]
    return after.split('string_value: "', 1)[1].split('"', 1)[0]
