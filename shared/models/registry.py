"""One factory for every model: named presets (``presets.json``) resolved in-process or on Triton.

    load_model("text_toxicity", "offline")                  # the in-process model
    load_model("text_toxicity", "offline", triton=client)   # the same model, served by Triton

Presets are data: the factory's import path and arguments, the default threshold, and the
name the model has in the Triton model repository.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

PRESETS_FILE = Path(__file__).resolve().parent / "presets.json"


def models_dir() -> Path:
    """Where production weights live (``winnow models fetch`` writes there)."""
    return Path(os.environ.get("WINNOW_MODELS_DIR", Path.home() / ".cache" / "winnow" / "models"))
KINDS = ("text_toxicity", "image_nsfw", "face_detector", "near_duplicate", "language_id")


@dataclass(frozen=True)
class ModelPreset:
    kind: str
    preset: str
    factory: str  # "module:callable"
    kwargs: dict[str, Any] = field(default_factory=dict)
    threshold: float | None = None
    triton_model: str = ""
    weights: str = ""
    files: tuple[str, ...] = ()  # PRODUCTION_WEIGHTS entries this preset reads from models_dir()

    def arguments(self, **overrides: Any) -> dict[str, Any]:
        """The factory's keyword arguments, with ``{models_dir}`` filled in."""
        resolved = {k: v.format(models_dir=models_dir()) if isinstance(v, str) else v for k, v in self.kwargs.items()}
        return {**resolved, **overrides}

    def build(self, **overrides: Any):
        """Import the factory and build the in-process model."""
        module_name, _, attribute = self.factory.partition(":")
        factory = getattr(importlib.import_module(module_name), attribute)
        return factory(**self.arguments(**overrides))


@lru_cache(maxsize=1)
def _presets() -> dict[str, dict[str, ModelPreset]]:
    raw = json.loads(PRESETS_FILE.read_text())
    return {kind: {name: ModelPreset(kind=kind, preset=name, **{**spec, "files": tuple(spec.get("files", ()))})
                   for name, spec in presets.items()}
            for kind, presets in raw.items() if not kind.startswith("_")}


def preset(kind: str, name: str) -> ModelPreset:
    presets = _presets()
    if kind not in presets:
        raise ValueError(f"unknown model kind {kind!r}; known: {sorted(presets)}")
    if name not in presets[kind]:
        raise ValueError(f"unknown {kind} preset {name!r}; known: {sorted(presets[kind])}")
    return presets[kind][name]


def all_presets() -> list[ModelPreset]:
    return [p for kind in _presets().values() for p in kind.values()]


def load_model(kind: str, name: str, triton=None, **overrides: Any):
    """The model of preset ``name``: in-process, or a Triton-backed twin when ``triton`` is given."""
    chosen = preset(kind, name)
    if triton is None:
        return chosen.build(**overrides)
    from winnow.shared.triton import remote

    return remote.remote_model(kind, triton, chosen.triton_model)
