"""The python-backend model behind every generated ``model.py``: runs inside Triton's stub only.

``initialize`` builds the in-process model once from the factory named in ``config.pbtxt``
(``winnow_factory``, ``module:function``, called with the JSON ``winnow_factory_kwargs``) and
checks that it implements the interface of its kind and what the configuration declares of it
(``dim``, ``threshold``, the image fit). ``execute`` receives the requests the
dynamic batcher gathered, decodes every request's rows, calls the model once on all of them, and
splits the answer back per request.

Failures stay with their request: a row that does not decode fails its request with
``INVALID_ARG``; if the model raises on the gathered batch, each request is run alone, so only the
requests that really fail get an ``INTERNAL`` error. The server and the other requests go on.

Tensors cross the stub by DLPack only (``np.from_dlpack`` in, ``Tensor.from_dlpack`` out): the
bundled stub's own numpy conversions are wrong under numpy 2 (see :mod:`winnow.shared.triton.contract`).
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the python backend's stub

from winnow.shared.models import base
from winnow.shared.triton import contract
from winnow.shared.triton.contract import ModelKind

_PROTOCOLS = {
    ModelKind.TEXT_TOXICITY: base.TextToxicity,
    ModelKind.IMAGE_NSFW: base.ImageNSFW,
    ModelKind.FACE_DETECTOR: base.FaceDetector,
    ModelKind.NEAR_DUPLICATE: base.NearDuplicateDescriptor,
    ModelKind.CLIP_IMAGE: base.ClipEncoder,
    ModelKind.CLIP_TEXT: base.ClipEncoder,
    ModelKind.LANGUAGE_ID: base.LanguageIdentifier,
}

_NUMPY_TYPES = {"TYPE_FP32": np.float32, "TYPE_INT32": np.int32, "TYPE_UINT8": np.uint8}


def _quiet_used_dlpack_capsules() -> None:
    """Drop one harmless message per output tensor.

    The backend renames a consumed DLPack capsule "used_dlpack" where numpy expects the standard
    "used_dltensor", so numpy's capsule destructor reports "PyCapsule_GetPointer called with
    incorrect name" (and, rightly, frees nothing: the backend owns the tensor by then).
    """
    default_hook = sys.unraisablehook

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, ValueError) and "PyCapsule_GetPointer" in str(unraisable.exc_value):
            return
        default_hook(unraisable)

    sys.unraisablehook = hook


_quiet_used_dlpack_capsules()

_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest: blocks below it come from the heap
_TRIM_THRESHOLD = 512 * 1024 * 1024  # free memory the heap keeps before giving it back


def _keep_freed_memory() -> None:
    """Let glibc's heap keep the memory a batch frees, for the next batch to reuse.

    A model allocates its intermediate tensors afresh on every batch. With glibc's starting
    thresholds, blocks above 128 KiB are mapped and unmapped each time and the freed top of the
    heap is trimmed, so every batch faults its memory back in, page by page: thousands of page
    faults per batch of the tiny CLIP, whose forward pass then takes 20-30 % longer in the stub
    than the same call in a client process (whose history of large allocations had raised glibc's
    dynamic thresholds). Fixed thresholds make the stub independent of that history. Memory only:
    no value changes. Elsewhere than glibc this does nothing.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mallopt(m_mmap_threshold, _MMAP_THRESHOLD)
    mallopt(m_trim_threshold, _TRIM_THRESHOLD)


def load_factory(path: str):
    """``package.module:function`` to the function."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"factory {path!r} is not of the form 'package.module:function'")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


class _BadInput(ValueError):
    """A request's rows could not be decoded."""


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.name = config["name"]
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.kind = ModelKind(params[contract.PARAM_KIND])
        self.signature = contract.SIGNATURES[self.kind]
        self.dim = int(params[contract.PARAM_DIM]) if contract.PARAM_DIM in params else None
        self._output_types = {
            output["name"]: _NUMPY_TYPES[output["data_type"]] for output in config.get("output", [])
        }

        _keep_freed_memory()
        started = time.monotonic()
        factory = load_factory(params[contract.PARAM_FACTORY])
        kwargs = json.loads(params.get(contract.PARAM_FACTORY_KWARGS) or "{}")
        self.model = factory(**kwargs)
        self._check_model(params)
        self._method = getattr(self.model, self.signature.method)
        pb_utils.Logger.log_info(
            f"winnow model {self.name!r} ({self.kind.value}) built by {params[contract.PARAM_FACTORY]} "
            f"in {time.monotonic() - started:.2f} s"
        )

    def _check_model(self, params: dict[str, str]) -> None:
        protocol = _PROTOCOLS[self.kind]
        if not isinstance(self.model, protocol):
            raise TypeError(f"{params[contract.PARAM_FACTORY]} built a {type(self.model).__name__}, "
                            f"which does not implement {protocol.__name__}")
        if self.dim is not None and getattr(self.model, "dim", self.dim) != self.dim:
            raise ValueError(f"model {self.name!r}: config.pbtxt declares dim {self.dim}, "
                             f"the model has dim {self.model.dim}")
        if contract.PARAM_THRESHOLD in params:
            declared = float(params[contract.PARAM_THRESHOLD])
            if not np.isclose(declared, float(self.model.threshold)):
                raise ValueError(f"model {self.name!r}: config.pbtxt declares threshold {declared}, "
                                 f"the model has threshold {self.model.threshold}")
        if contract.PARAM_IMAGE_FIT in params:
            # clients fit images to this side before sending them: the model must do that same fit first
            declared_fit = int(params[contract.PARAM_IMAGE_FIT])
            fit = getattr(self.model, "image_fit", None)
            if fit != declared_fit:
                raise ValueError(f"model {self.name!r}: config.pbtxt declares image fit {declared_fit}, but the model "
                                 + (f"fits images to {fit}" if fit else "does not fit images (no image_fit)"))

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        decoded: list[tuple[int, list]] = []
        for index, request in enumerate(requests):
            try:
                decoded.append((index, self._decode(request)))
            except _BadInput as exc:
                responses[index] = _error_response(str(exc), pb_utils.TritonError.INVALID_ARG)
        if decoded:
            self._answer(decoded, responses)
        return responses

    def finalize(self) -> None:
        close = getattr(self.model, "close", None)
        if callable(close):
            close()

    # --- internals -----------------------------------------------------------------------------

    def _decode(self, request) -> list:
        arrays = []
        for spec in self.signature.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
            if tensor is None:
                raise _BadInput(f"model {self.name!r} needs input {spec.name!r}")
            arrays.append(np.from_dlpack(tensor))
        try:
            rows = contract.unpack_rows(*arrays)
        except ValueError as exc:
            raise _BadInput(f"{self.signature.item}: {exc}") from None
        decode = contract.decode_image if self.signature.item == contract.IMAGE else contract.decode_text
        items = []
        for row_index, row in enumerate(rows):
            try:
                items.append(decode(row))
            except ValueError as exc:
                raise _BadInput(f"{self.signature.item} row {row_index}: {exc}") from None
        return items

    def _answer(self, decoded: list[tuple[int, list]], responses: list) -> None:
        items = [item for _, request_items in decoded for item in request_items]
        try:
            results = self._run(items)
        except Exception:  # noqa: BLE001 - isolate the failing requests below
            if len(decoded) == 1:
                responses[decoded[0][0]] = self._failure(decoded[0][1])
                return
            pb_utils.Logger.log_warn(f"winnow model {self.name!r} failed on a batch of {len(decoded)} requests; "
                                     "running each alone")
            for index, request_items in decoded:
                try:
                    responses[index] = self._respond(self._run(request_items), 0, len(request_items))
                except Exception:  # noqa: BLE001
                    responses[index] = self._failure(request_items)
            return
        offset = 0
        for index, request_items in decoded:
            responses[index] = self._respond(results, offset, offset + len(request_items))
            offset += len(request_items)

    def _run(self, items: list) -> dict[str, list | np.ndarray]:
        """Call the model on all rows: each output as a sequence with one entry per row."""
        if self.kind == ModelKind.FACE_DETECTOR:
            boxes = self._method(items)
            results: dict[str, list | np.ndarray] = {contract.BOXES: boxes}
        elif self.kind == ModelKind.LANGUAGE_ID:
            detected = self._method(items)
            results = {
                contract.LANGUAGE: [language for language, _ in detected],
                contract.PROBABILITY: np.asarray([probability for _, probability in detected], dtype=np.float32),
            }
        else:
            (output,) = self.signature.outputs
            results = {output.name: np.asarray(self._method(items), dtype=np.float32)}
        for name, values in results.items():
            if len(values) != len(items):
                raise ValueError(f"model {self.name!r} returned {len(values)} {name} rows for {len(items)} inputs")
        return results

    def _respond(self, results: dict[str, list | np.ndarray], start: int, stop: int):
        arrays: dict[str, np.ndarray] = {}
        if self.kind == ModelKind.FACE_DETECTOR:
            arrays = _padded_boxes(results[contract.BOXES][start:stop])
        else:
            for name, values in results.items():
                part = values[start:stop]
                if name == contract.LANGUAGE:
                    arrays[name] = contract.pack_rows([code.encode("utf-8") for code in part])[0]
                else:
                    arrays[name] = np.asarray(part, dtype=self._output_types[name]).reshape(stop - start, -1)
        tensors = [pb_utils.Tensor.from_dlpack(name, np.ascontiguousarray(array)) for name, array in arrays.items()]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _failure(self, items: list):
        message = traceback.format_exc(limit=8)
        pb_utils.Logger.log_error(f"winnow model {self.name!r} failed on {len(items)} rows:\n{message}")
        last_line = message.strip().splitlines()[-1]
        return _error_response(f"model {self.name!r} failed: {last_line}", pb_utils.TritonError.INTERNAL)


def _padded_boxes(per_image: list) -> dict[str, np.ndarray]:
    counts = np.array([[len(boxes)] for boxes in per_image], dtype=np.int32).reshape(-1, 1)
    # at least one slot: the backend refuses empty DLPack tensors
    padded = np.zeros((len(per_image), max(1, int(counts.max(initial=0))), 5), dtype=np.float32)
    for i, boxes in enumerate(per_image):
        if len(boxes):
            padded[i, : len(boxes)] = np.asarray(boxes, dtype=np.float32).reshape(-1, 5)
    return {contract.BOXES: padded, contract.BOX_COUNT: counts}


def _error_response(message: str, code):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))
