"""An example stage plugin for winnow: drop images that are too blurry to teach anything.

Sharpness is the variance of the Laplacian of the grey image (Pech-Pacheco et al., 2000), on the
image as stored, scaled to at most 512 pixels on its longer side so the measure does not depend
on the download size. Each kept or dropped sample gets a ``sharpness`` column; a sample below
``min_sharpness`` is dropped with the reason ``blurry_image``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from winnow.shared.curation import Sample, SampleStage, Verdict
from winnow.shared.option_flags import option

DEFAULT_MIN_SHARPNESS = 20.0
LONGER_SIDE = 512


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of an RGB uint8 image."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    scale = LONGER_SIDE / max(grey.shape)
    if scale < 1:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


@dataclass(frozen=True)
class SharpnessOptions:
    """The stage's options: ``--stage_option sharpness:min_sharpness=50`` or ``WINNOW_STAGE_OPTIONS``."""

    min_sharpness: float = option(DEFAULT_MIN_SHARPNESS, help="drop images whose Laplacian variance is below this")

    def __post_init__(self) -> None:
        if self.min_sharpness < 0:
            raise ValueError(f"min_sharpness must be >= 0, got {self.min_sharpness}")


class SharpnessStage(SampleStage):
    """Drops blurry images (options: :class:`SharpnessOptions`)."""

    name = "sharpness"
    options_type = SharpnessOptions  # winnow reads the stage's KEY=VALUE options into it
    input_columns = ()  # it needs only the image
    output_columns = ("sharpness",)
    drop_reasons = ("blurry_image",)

    def __init__(self, options: SharpnessOptions | None = None) -> None:
        self.min_sharpness = (options or SharpnessOptions()).min_sharpness

    def thresholds(self) -> dict[str, float]:
        return {"sharpness": self.min_sharpness}

    def judge(self, samples: list[Sample], shard: dict[str, Any]) -> list[Verdict]:
        verdicts = []
        for sample in samples:
            value = sharpness(sample.image)
            columns = {"sharpness": value}
            if value < self.min_sharpness:
                verdicts.append(Verdict(False, "blurry_image", f"sharpness {value:.1f} < {self.min_sharpness:g}",
                                        columns))
            else:
                verdicts.append(Verdict(True, columns=columns))
        return verdicts
