"""The safety stage: drop samples with a toxic caption or an unsafe image, keeping the scores.

DataComp's pool went through Detoxify on captions and an NSFW classifier on images; winnow
records both scores for every sample (``toxicity_score``, ``nsfw_score``) and drops a sample
whose score reaches the stage's threshold (``>=``), with reason ``toxic_caption`` or ``nsfw_image``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from winnow.services.safety.options import SafetyOptions
from winnow.shared.curation import Sample, SampleStage, Verdict
from winnow.shared.models.base import ImageNeed, ImageNSFW, TextToxicity, image_need
from winnow.shared.models.provider import model_factory
from winnow.shared.models.registry import preset


def build_stage(options: SafetyOptions, model_preset: str = "offline", triton_url: str = "") -> SafetyStage:
    """The safety stage of ``options`` with the preset's models (on Triton at ``triton_url`` if given),
    for the service and ``winnow run`` alike."""
    options = replace(options, toxicity_threshold=_or(options.toxicity_threshold,
                                                      preset("text_toxicity", model_preset).threshold),
                      nsfw_threshold=_or(options.nsfw_threshold, preset("image_nsfw", model_preset).threshold))
    return SafetyStage(model_factory("text_toxicity", model_preset, triton_url),
                       model_factory("image_nsfw", model_preset, triton_url), options)


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


class SafetyStage(SampleStage):
    name = "safety"
    input_columns = ("text",)
    output_columns = ("toxicity_score", "nsfw_score")
    drop_reasons = ("toxic_caption", "nsfw_image")

    def __init__(self, toxicity: Callable[[], TextToxicity], nsfw: Callable[[], ImageNSFW],
                 options: SafetyOptions | None = None) -> None:
        self.options = options or SafetyOptions()
        if self.options.toxicity_threshold is None or self.options.nsfw_threshold is None:
            raise ValueError("the safety stage needs both thresholds (build_stage takes the model preset's)")
        self.batch_size = self.options.batch_size
        self._make_toxicity, self._make_nsfw = toxicity, nsfw
        self.toxicity: TextToxicity | None = None
        self.nsfw: ImageNSFW | None = None

    def setup(self) -> None:
        if self.toxicity is None:
            self.toxicity = self._make_toxicity()
            self.nsfw = self._make_nsfw()

    def image_need(self) -> ImageNeed | None:
        self.setup()
        return ImageNeed.of_all([image_need(self.nsfw)])

    def thresholds(self) -> dict[str, float]:
        return {"toxicity_score": self.options.toxicity_threshold, "nsfw_score": self.options.nsfw_threshold}

    def judge(self, samples: list[Sample], shard: dict[str, Any]) -> list[Verdict]:
        self.setup()
        toxicity = np.asarray(self.toxicity.score([s.text for s in samples]), np.float32)
        nsfw = np.asarray(self.nsfw.score([s.image for s in samples]), np.float32)
        verdicts = []
        for tox, unsafe in zip(toxicity.tolist(), nsfw.tolist()):
            columns = {"toxicity_score": tox, "nsfw_score": unsafe}
            if tox >= self.options.toxicity_threshold:
                verdicts.append(Verdict(False, "toxic_caption", f"toxicity {tox:.3f} >= "
                                        f"{self.options.toxicity_threshold} ({self.toxicity.name})", columns))
            elif unsafe >= self.options.nsfw_threshold:
                verdicts.append(Verdict(False, "nsfw_image", f"nsfw {unsafe:.3f} >= "
                                        f"{self.options.nsfw_threshold} ({self.nsfw.name})", columns))
            else:
                verdicts.append(Verdict(True, columns=columns))
        return verdicts
