"""The two small torch networks behind the production loaders, with the layer names of the
published checkpoints so their state dicts load as they are.

- :class:`ClipNSFWHead`: LAION's CLIP-based NSFW detector for ViT-L/14 image embeddings
  (``NSFWModel_L14`` in LAION-AI/CLIP-based-NSFW-Detector ``src/models.py``, ported from the
  AutoKeras original): a stored normalisation, three ReLU layers 768 -> 64 -> 512 -> 256, one
  sigmoid output.
- :class:`IscNet`: Yokoo's ISC21 descriptor (``ISCNet`` in lyakaap/ISC21-Descriptor-Track-1st
  ``isc_feature_extractor/model.py``): a timm ``features_only`` backbone, GeM pooling of its last
  feature map, a bias-free linear layer to 256, BatchNorm1d and L2 normalisation.

This module imports torch at the top; ``winnow.shared.models.production`` imports it only when a
loader is built.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CLIP_L14_DIM = 768


class _StoredNormalization(nn.Module):
    """Keras' ``Normalization`` layer as the port keeps it: mean and variance are weights."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("variance", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / (self.variance.sqrt() + 1e-10)


class ClipNSFWHead(nn.Module):
    """P(nsfw) from an L2-normalised CLIP ViT-L/14 image embedding, shape (N, 768) -> (N, 1)."""

    def __init__(self, dim: int = CLIP_L14_DIM) -> None:
        super().__init__()
        self.norm = _StoredNormalization(dim)
        self.linear_1 = nn.Linear(dim, 64)
        self.linear_2 = nn.Linear(64, 512)
        self.linear_3 = nn.Linear(512, 256)
        self.linear_4 = nn.Linear(256, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        x = F.relu(self.linear_1(x))
        x = F.relu(self.linear_2(x))
        x = F.relu(self.linear_3(x))
        return torch.sigmoid(self.linear_4(x))


def gem(x: torch.Tensor, p: float, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling over the spatial axes; p = 1 is average pooling."""
    return F.avg_pool2d(x.clamp(min=eps).pow(p), (x.size(-2), x.size(-1))).pow(1.0 / p)


class IscNet(nn.Module):
    """Backbone features -> GeM -> fc (no bias) -> BatchNorm1d -> L2 normalisation."""

    def __init__(self, backbone: nn.Module, fc_dim: int = 256, eval_p: float = 1.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(backbone.feature_info.info[-1]["num_chs"], fc_dim, bias=False)
        self.bn = nn.BatchNorm1d(fc_dim)
        # v107 was trained with p = 1 and its descriptors were extracted with --gem-eval-p 1.0
        # (reproduce_experiments.md); the package's create_model defaults to the same.
        self.eval_p = eval_p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)[-1]
        pooled = gem(features, self.eval_p).flatten(1)
        return F.normalize(self.bn(self.fc(pooled)))
