"""The embed stage's options: ``winnow run --embed.*`` flags and the service's ``WINNOW_*`` settings."""

from __future__ import annotations

from dataclasses import dataclass

from winnow.shared.option_flags import option

#: DataComp's two CLIP models: the key names the shard's columns and sidecar arrays.
DATACOMP_CLIP_MODELS = {"b32": {"arch": "ViT-B-32", "pretrained": "openai"},
                        "l14": {"arch": "ViT-L-14", "pretrained": "openai"}}


@dataclass(frozen=True)
class EmbedOptions:
    """The embed stage's options (``WINNOW_CLIP_MODELS``, ... for the service)."""

    clip_models: dict[str, dict[str, str]] = option(
        default_factory=lambda: {k: dict(v) for k, v in DATACOMP_CLIP_MODELS.items()},
        help='key -> {"arch": open_clip architecture, "pretrained": tag or checkpoint (optional), '
             '"triton_model": the model on Triton (optional; default clip_<key>)}')
    device: str = option("cpu", help="torch device of in-process models")
    batch_size: int = option(64, help="samples per model call")
