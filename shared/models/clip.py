"""CLIP encoders through open_clip: any open_clip architecture, with weights from a tag or a file.

Production (DataComp's pool scores): ``ViT-B-32`` and ``ViT-L-14`` with OpenAI's weights
(``pretrained="openai"``, fetched by ``winnow models fetch`` where the internet is reachable).
Offline: no pretrained CLIP ships inside a package, so the embedded default uses a checkpoint
file (``pretrained="/path/epoch_N.pt"``), e.g. the small CLIP that ``winnow train`` makes.
winnow adds its own small architectures (``shared/models/clip_configs``) to open_clip's registry.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from winnow.shared.models.base import ImageNeed

CONFIG_DIR = Path(__file__).resolve().parent / "clip_configs"
_registered = threading.Lock()
_done = False


def register_winnow_configs() -> None:
    """Make winnow's architectures (e.g. ``winnow-tiny-ViT``) known to open_clip, once."""
    global _done
    with _registered:
        if not _done:
            import open_clip

            open_clip.add_model_config(CONFIG_DIR)
            _done = True


class OpenClipEncoder:
    """An open_clip model in inference mode; images and texts in, L2-normalised embeddings out.

    ``image_fit`` is the side ``S`` when the image preprocessing begins with
    :func:`winnow.shared.triton.contract.fit_image` at ``S`` (open_clip's default), else ``None``: a
    Triton client may then send the fitted ``S x S`` image instead of the original, for the same
    embedding.
    """

    def __init__(self, arch: str, pretrained: str | None = None, device: str = "cpu", batch_size: int = 64,
                 name: str | None = None) -> None:
        import open_clip
        import torch

        register_winnow_configs()
        if arch not in open_clip.list_models():
            raise ValueError(f"unknown CLIP architecture {arch!r}; open_clip knows e.g. ViT-B-32, ViT-L-14, "
                             f"winnow-tiny-ViT")
        if pretrained and ("/" in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))):
            if not Path(pretrained).exists():
                raise FileNotFoundError(f"CLIP checkpoint {pretrained} does not exist")
        self.name = name or f"{arch}:{pretrained or 'random'}"
        self.arch = arch
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=pretrained or None, device=self.device)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.dim = int(self.model.text_projection.shape[1] if hasattr(self.model, "text_projection")
                       and self.model.text_projection is not None else self.model.visual.output_dim)
        self.image_fit = leading_fit(self.preprocess)
        self.image_need = ImageNeed(shorter=self.image_fit) if self.image_fit else None
        self._torch = torch

    def _normalised(self, features) -> np.ndarray:
        features = features.float()
        features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return features.cpu().numpy().astype(np.float32)

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        from PIL import Image

        out = []
        with self._torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = self._torch.stack([self.preprocess(Image.fromarray(_rgb(image)))
                                           for image in images[start:start + self.batch_size]])
                out.append(self._normalised(self.model.encode_image(batch.to(self.device))))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        out = []
        with self._torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                tokens = self.tokenizer([t or "" for t in texts[start:start + self.batch_size]])
                out.append(self._normalised(self.model.encode_text(tokens.to(self.device))))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


def leading_fit(preprocess) -> int | None:
    """``S`` if ``preprocess`` starts with torchvision's ``Resize(S, bicubic)`` and ``CenterCrop(S)``, else ``None``.

    Those two steps are :func:`winnow.shared.triton.contract.fit_image` (which the tests check pixel for
    pixel) and leave an ``S x S`` image as it is. Only the exact torchvision classes count: a
    subclass, another interpolation, a ``max_size`` or a crop of another size may behave otherwise.
    """
    from torchvision import transforms

    steps = getattr(preprocess, "transforms", [])
    if len(steps) < 2 or type(steps[0]) is not transforms.Resize or type(steps[1]) is not transforms.CenterCrop:
        return None
    resize, crop = steps[0], steps[1]
    size = resize.size if isinstance(resize.size, int) else (resize.size[0] if len(resize.size) == 1 else None)
    if (size is None or resize.max_size is not None
            or resize.interpolation != transforms.InterpolationMode.BICUBIC or tuple(crop.size) != (size, size)):
        return None
    return int(size)


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"images must be uint8 RGB arrays (H, W, 3), got {image.dtype} {image.shape}")
    return image


def parse_clip_model(spec: str) -> tuple[str, str, str | None]:
    """A ``--clip_model`` value, ``KEY=ARCH[:PRETRAINED]`` -> (key, arch, pretrained)."""
    key, sep, model = spec.partition("=")
    if not sep or not key or not model:
        raise ValueError(f"--clip_model takes KEY=ARCH[:CHECKPOINT_OR_TAG], got {spec!r}")
    arch, _, pretrained = model.partition(":")
    return key, arch, pretrained or None
