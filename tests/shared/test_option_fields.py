"""Settings made from a stage's options dataclass: the options own the names and defaults, the
environment sets them, and ``options()`` gives the dataclass back."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from winnow.shared.config import ServiceSettings, option_fields


@dataclass(frozen=True)
class Index:
    limit: int = 10
    kind: str = "flat"


@dataclass(frozen=True)
class Options:
    threshold: float | None = None
    names: tuple[str, ...] = ("a",)
    models: dict[str, str] = field(default_factory=lambda: {"b32": "ViT-B-32"})
    index: Index = Index(limit=20)
    internal: bool = True


class ExampleSettings(option_fields(Options, names={"index.limit": "index_flat_limit"}, exclude=("internal",)),
                      ServiceSettings):
    service_name: str = "example"


def test_the_defaults_are_the_options():
    settings = ExampleSettings()
    assert settings.options() == Options()
    assert {"threshold", "names", "models", "index_flat_limit", "index_kind"} <= set(ExampleSettings.model_fields)
    assert "internal" not in ExampleSettings.model_fields and "index" not in ExampleSettings.model_fields


def test_the_environment_sets_the_options(monkeypatch):
    for key, value in {"WINNOW_THRESHOLD": "0.25", "WINNOW_NAMES": '["x", "y"]', "WINNOW_MODELS": '{"l14": "L"}',
                       "WINNOW_INDEX_FLAT_LIMIT": "5", "WINNOW_INDEX_KIND": "ivf"}.items():
        monkeypatch.setenv(key, value)
    assert ExampleSettings().options() == Options(threshold=0.25, names=("x", "y"), models={"l14": "L"},
                                                  index=Index(limit=5, kind="ivf"))


def test_a_name_for_an_option_that_does_not_exist_is_refused():
    with pytest.raises(ValueError, match=r"no option\(s\) \['index.size'\]"):
        option_fields(Options, names={"index.size": "index_size"})
