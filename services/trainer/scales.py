"""Training scales as data: DataComp's five scales and winnow's ``tiny``, read from ``scales.json``.

A scale fixes everything about training except the data: the open_clip architecture, the number
of samples seen (DataComp: the pool size, the same whatever the size of the filtered subset), the
global batch size, the peak learning rate, the warmup steps and AdamW's beta2 (``None``: open_clip's
default for the model, 0.98 for ViTs).

    load_scale("small")             # a named scale from scales.json
    load_scale("my_scale.json")     # a custom scale: one JSON object with the same fields
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

SCALES_FILE = Path(__file__).resolve().parent / "scales.json"
DATACOMP_SCALES = ("debug", "small", "medium", "large", "xlarge")

_FIELDS = ("model", "samples_seen", "batch_size", "learning_rate", "warmup", "beta2")


@dataclass(frozen=True)
class Scale:
    name: str
    model: str  # open_clip architecture
    samples_seen: int  # over the whole run; DataComp's train_num_samples (= the pool size)
    batch_size: int  # global: split over ranks and gradient-accumulation steps
    learning_rate: float  # peak, reached after warmup, then cosine decay
    warmup: int  # optimizer steps of linear warmup
    beta2: float | None = None  # AdamW beta2; None keeps open_clip's default for the model

    def __post_init__(self) -> None:
        where = f"scale {self.name!r}"
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"{where}: model must be an open_clip architecture name, got {self.model!r}")
        for name in ("samples_seen", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{where}: {name} must be a positive integer, got {value!r}")
        if not isinstance(self.warmup, int) or isinstance(self.warmup, bool) or self.warmup < 0:
            raise ValueError(f"{where}: warmup must be an integer >= 0, got {self.warmup!r}")
        if not isinstance(self.learning_rate, (int, float)) or not self.learning_rate > 0:
            raise ValueError(f"{where}: learning_rate must be a positive number, got {self.learning_rate!r}")
        if self.beta2 is not None and not (isinstance(self.beta2, (int, float)) and 0 < self.beta2 < 1):
            raise ValueError(f"{where}: beta2 must be in (0, 1) or null, got {self.beta2!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def datacomp_config(self) -> dict[str, Any]:
        """The scale in the key names of DataComp's ``scale_configs.py`` (and its ``info.pkl``)."""
        return {"batch_size": self.batch_size, "learning_rate": self.learning_rate,
                "train_num_samples": self.samples_seen, "warmup": self.warmup, "model": self.model,
                "beta2": self.beta2}


def _scale_from_json(name: str, data: Any, source: str) -> Scale:
    if not isinstance(data, dict):
        raise ValueError(f"scale {name!r} in {source} must be a JSON object, got {type(data).__name__}")
    data = {k: v for k, v in data.items() if k != "name"}  # a custom file may name itself
    unknown = sorted(set(data) - set(_FIELDS))
    missing = [f for f in _FIELDS if f not in data and f != "beta2"]
    if unknown or missing:
        raise ValueError(f"scale {name!r} in {source}: " + "; ".join(
            part for part in (f"unknown fields {unknown}" if unknown else "",
                              f"missing fields {missing}" if missing else "") if part)
            + f" (a scale has {list(_FIELDS)})")
    return Scale(name=name, **data)


@lru_cache(maxsize=1)
def _named_scales() -> dict[str, Scale]:
    data = json.loads(SCALES_FILE.read_text())
    return {name: _scale_from_json(name, value, SCALES_FILE.name)
            for name, value in data.items() if not name.startswith("_")}


def available_scales() -> list[str]:
    """The named scales: DataComp's in order of size, then winnow's own."""
    names = list(_named_scales())
    return [n for n in DATACOMP_SCALES if n in names] + [n for n in names if n not in DATACOMP_SCALES]


def load_scale(name: str) -> Scale:
    """A named scale, or a custom one from a ``.json`` file holding one scale object."""
    scales = _named_scales()
    if name in scales:
        return scales[name]
    if name.endswith(".json"):
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"scale file {name} does not exist")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"scale file {name} is not valid JSON: {exc}") from exc
        label = data.get("name", path.stem) if isinstance(data, dict) else path.stem
        return _scale_from_json(str(label), data, name)
    raise ValueError(f"unknown scale {name!r}; named scales are {', '.join(available_scales())}, "
                     f"or give a .json file with the fields {', '.join(_FIELDS)}")


def resolve_scale(scale: str | Scale) -> Scale:
    return scale if isinstance(scale, Scale) else load_scale(scale)
