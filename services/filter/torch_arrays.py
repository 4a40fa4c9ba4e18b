"""Reading DataComp's ``torch.save`` files safely: pool centroids and target embeddings.

DataComp's image-based baseline downloads ``{scale}_centroids`` (``torch.save`` of the numpy array
faiss's k-means returned, written with numpy 1) and ``in1k_clip_vit_l14_{i}`` (a dict whose
``image_features`` is a tensor). ``torch.load(weights_only=True)`` refuses the first: a pickled
numpy array names ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and ``numpy.dtype``,
which are not on torch's allow-list. Those three are allowed here, under both their numpy 1 and
numpy 2 module names and for this load only, so a file can still not run code while it is read
(anything else it names is refused, as before); the result is always a float32 numpy array.
"""

from __future__ import annotations

import io

import numpy as np

TARGET_KEY = "image_features"  # DataComp's ImageNet embedding files


def _numpy_array_globals() -> list:
    reconstruct = np._core.multiarray._reconstruct
    scalar = np._core.multiarray.scalar
    dtype_classes = [type(np.dtype(code)) for code in ("f2", "f4", "f8", "i8", "i4", "u8", "u1", "b1")]
    return [reconstruct, (reconstruct, "numpy.core.multiarray._reconstruct"),
            scalar, (scalar, "numpy.core.multiarray.scalar"),
            np.ndarray, np.dtype, *dtype_classes]


def load_torch_array(data: bytes, key: str = TARGET_KEY, *, where: str = "file") -> np.ndarray:
    """The array in a ``torch.save`` file: a numpy array or a tensor, or ``data[key]`` of a dict."""
    import torch

    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError or others for a bad file
        raise ValueError(f"{where} is not a torch.save file of an array or tensor that can be read safely: "
                         f"{_reason(exc)}") from exc
    if isinstance(loaded, dict):
        if key not in loaded:
            raise ValueError(f"{where} holds a dict with keys {sorted(map(str, loaded))}; expected {key!r}")
        loaded = loaded[key]
    if isinstance(loaded, torch.Tensor):
        return loaded.detach().float().numpy()
    if isinstance(loaded, np.ndarray):
        return loaded.astype(np.float32, copy=False)
    raise ValueError(f"{where} holds a {type(loaded).__name__}, not an array or tensor")


def _reason(exc: Exception) -> str:
    """The line of torch's long message that says what was refused."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "Unsupported" in line or "error:" in line:
            return line
    return lines[0] if lines else type(exc).__name__
