"""The safety stage's options: ``winnow run --safety.*`` flags and the service's ``WINNOW_*`` settings."""

from __future__ import annotations

from dataclasses import dataclass

from winnow.shared.option_flags import option


@dataclass(frozen=True)
class SafetyOptions:
    """The safety stage's options (``WINNOW_TOXICITY_THRESHOLD``, ... for the service)."""

    toxicity_threshold: float | None = option(None, help="drop at a caption toxicity >= this; None: the model "
                                                         "preset's")
    nsfw_threshold: float | None = option(None, help="drop at an image NSFW score >= this; None: the model preset's")
    batch_size: int = option(64, help="samples per model call")
