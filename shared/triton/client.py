"""The one Triton client of winnow: gRPC, explicit timeouts, a readiness wait, retries, clear errors.

Usage::

    with TritonClient("127.0.0.1:8001", infer_timeout_s=30) as client:
        client.wait_ready(["toxicity"], timeout=60)
        out = client.infer("toxicity", {TEXT: encode_texts(["hello"])}, [SCORE])

Only ``UNAVAILABLE`` is retried (with exponential backoff): the server is starting, restarting or
unreachable, and inference is a pure function, so a retry is safe. Everything else is answered at
once with one of the exceptions below.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import structlog
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from winnow.shared.outages import DependencyUnavailable

log = structlog.get_logger(__name__)

T = TypeVar("T")


# What Triton says of a model its repository has but whose versions are not loaded yet (while it
# starts or restarts), as opposed to a model it does not have at all.
MODEL_LOADING_MARKER = "has no available versions"


class TritonError(RuntimeError):
    """Anything that went wrong talking to Triton."""

    def __init__(self, message: str, *, model: str | None = None, status: str | None = None) -> None:
        super().__init__(message)
        self.model = model
        self.status = status  # the gRPC status code name, e.g. "INTERNAL", when the server sent one


class TritonUnavailable(TritonError, DependencyUnavailable):
    """The server cannot be reached, is not ready, or a model did not become ready in time."""


class TritonModelError(TritonError):
    """The model rejected or failed this request (bad input, an exception inside the model)."""


class TritonModelNotFound(TritonModelError):
    """No model of that name is served."""


class TritonTimeout(TritonError, TimeoutError, DependencyUnavailable):
    """No answer within the deadline."""


def _status_name(exc: InferenceServerException) -> str:
    status = exc.status() or ""
    return status.removeprefix("StatusCode.")


class _ClosedConnection:
    """What a closed :class:`TritonClient` calls instead of the library's client: every call raises."""

    def __init__(self, url: str) -> None:
        self.url = url

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def closed(*args: Any, **kwargs: Any) -> Any:
            raise TritonError(f"the client of Triton at {self.url} is closed ({name} called after close())")

        return closed


class TritonClient:
    """A thread-safe gRPC client for one Triton server.

    ``init_timeout_s`` bounds each control call (readiness, model configuration) and is the default
    for :meth:`wait_ready`; ``infer_timeout_s`` is the deadline of one inference request;
    ``retries`` is how many times an ``UNAVAILABLE`` call is tried again, ``backoff_s`` the first
    pause (doubled each time); ``max_in_flight`` bounds the requests :meth:`infer_many` sends at once.
    """

    def __init__(
        self,
        url: str,
        *,
        init_timeout_s: float = 60.0,
        infer_timeout_s: float = 60.0,
        retries: int = 3,
        backoff_s: float = 0.2,
        max_in_flight: int = 4,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.url = url
        self.init_timeout_s = init_timeout_s
        self.infer_timeout_s = infer_timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_in_flight = max(1, max_in_flight)
        # the library's defaults already raise the gRPC message limits to 2 GiB
        self._client = grpcclient.InferenceServerClient(url)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # --- readiness -----------------------------------------------------------------------------

    def wait_ready(self, model_names: Iterable[str] = (), timeout: float | None = None) -> None:
        """Block until the server and every named model are ready.

        Raises :class:`TritonModelNotFound` as soon as the ready server's repository has no such
        model, and :class:`TritonUnavailable` with each model's state when ``timeout`` (default
        ``init_timeout_s``) runs out.
        """
        names = list(model_names)
        deadline = time.monotonic() + (self.init_timeout_s if timeout is None else timeout)
        pending = set(names)
        server_ready = False
        last_error = ""
        while True:
            try:
                server_ready = server_ready or self._client.is_server_ready(client_timeout=self._poll_timeout(deadline))
                if server_ready:
                    pending = {name for name in pending if not self._is_model_ready(name, deadline)}
                    if not pending:
                        return
                    self._raise_if_absent(pending)
            except InferenceServerException as exc:
                last_error = f"{_status_name(exc)}: {exc.message()}"
            if time.monotonic() >= deadline:
                break
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
        if not server_ready:
            raise TritonUnavailable(f"Triton at {self.url} was not ready within {timeout or self.init_timeout_s:g} s"
                                    + (f" (last error: {last_error})" if last_error else ""))
        states = self._model_states()
        detail = "; ".join(f"{name}: {states.get(name, 'not in the repository')}" for name in sorted(pending))
        raise TritonUnavailable(f"models not ready on Triton at {self.url} within "
                                f"{timeout or self.init_timeout_s:g} s: {detail}")

    def model_ready(self, name: str) -> bool:
        """Whether the server answers and ``name`` is loaded and ready (never raises for a missing model)."""
        try:
            return bool(self._client.is_model_ready(name, client_timeout=self.init_timeout_s))
        except InferenceServerException as exc:
            if _status_name(exc) in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                return False
            raise self._translate(exc, name, self.init_timeout_s) from exc

    def model_config(self, name: str) -> dict[str, Any]:
        """The model's configuration as Triton serves it (``config.pbtxt`` as JSON)."""
        response = self._with_retries(
            lambda: self._client.get_model_config(name, as_json=True, client_timeout=self.init_timeout_s),
            name,
            self.init_timeout_s,
        )
        return response["config"]

    def load_model(self, name: str, timeout: float | None = None) -> None:
        """Load (or reload) a model on a server in explicit model-control mode; raises with the reason."""
        timeout = self.init_timeout_s if timeout is None else timeout
        self._with_retries(lambda: self._client.load_model(name, client_timeout=timeout), name, timeout)

    # --- inference -----------------------------------------------------------------------------

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: list[str],
        *,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run one request; BYTES tensors go in and come out as object arrays of ``bytes``."""
        timeout = self.infer_timeout_s if timeout is None else timeout
        infer_inputs = [self._infer_input(name, array) for name, array in inputs.items()]
        requested = [grpcclient.InferRequestedOutput(name) for name in outputs]
        result = self._with_retries(
            lambda: self._client.infer(model, infer_inputs, outputs=requested, client_timeout=timeout),
            model,
            timeout,
        )
        answer = {}
        for name in outputs:
            array = result.as_numpy(name)
            if array is None:
                raise TritonModelError(f"model {model!r} returned no output {name!r}", model=model)
            answer[name] = array
        return answer

    def infer_many(
        self,
        model: str,
        requests: Sequence[Mapping[str, np.ndarray]],
        outputs: list[str],
        *,
        timeout: float | None = None,
    ) -> list[dict[str, np.ndarray]]:
        """Several requests at once (``max_in_flight`` in flight), answers in order.

        Concurrent requests are what the server's dynamic batcher merges; the first error is raised.
        """
        if len(requests) <= 1:
            return [self.infer(model, inputs, outputs, timeout=timeout) for inputs in requests]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="triton-infer")
        futures = [self._pool.submit(self.infer, model, inputs, outputs, timeout=timeout) for inputs in requests]
        try:
            return [future.result() for future in futures]
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        """Close the connection; closing twice is harmless, any later call raises :class:`TritonError`."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
        # Drop the library's client now: its __del__ closes the channel again, and when that runs
        # at interpreter exit (a closed client kept alive by a cache) grpc is already torn down.
        client, self._client = self._client, _ClosedConnection(self.url)
        client.close()

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- internals -----------------------------------------------------------------------------

    @staticmethod
    def _infer_input(name: str, array: np.ndarray) -> grpcclient.InferInput:
        array = np.asarray(array)
        datatype = np_to_triton_dtype(array.dtype)
        if datatype is None:
            raise TypeError(f"input {name!r}: numpy dtype {array.dtype} has no Triton equivalent")
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        return tensor

    def _with_retries(self, call: Callable[[], T], model: str, timeout: float) -> T:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return call()
            except InferenceServerException as exc:
                error = self._translate(exc, model, timeout)
                if not isinstance(error, TritonUnavailable) or attempt == self.retries:
                    raise error from exc
                log.warning("triton_unavailable_retrying", url=self.url, model=model, attempt=attempt + 1,
                            retries=self.retries, delay_s=delay, error=exc.message())
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _translate(self, exc: InferenceServerException, model: str, timeout: float) -> TritonError:
        status = _status_name(exc)
        message = exc.message() or str(exc)
        if status == "UNAVAILABLE":
            return TritonUnavailable(f"Triton at {self.url} is unavailable ({model!r}): {message}",
                                     model=model, status=status)
        if status == "DEADLINE_EXCEEDED":
            return TritonTimeout(f"model {model!r} on Triton at {self.url} gave no answer within {timeout:g} s",
                                 model=model, status=status)
        if MODEL_LOADING_MARKER in message:
            # the repository has the model but no version is loaded yet: Triton is (re)starting
            return TritonUnavailable(f"model {model!r} is still loading on Triton at {self.url}: {message}",
                                     model=model, status=status)
        if status == "NOT_FOUND" or "unknown model" in message:
            return TritonModelNotFound(f"model {model!r} is not served by Triton at {self.url}: {message}",
                                       model=model, status=status)
        return TritonModelError(f"model {model!r} failed on Triton at {self.url} ({status}): {message}",
                                model=model, status=status)

    def _is_model_ready(self, name: str, deadline: float) -> bool:
        return bool(self._client.is_model_ready(name, client_timeout=self._poll_timeout(deadline)))

    def _poll_timeout(self, deadline: float) -> float:
        return max(0.1, min(self.init_timeout_s, deadline - time.monotonic()))

    def _model_states(self) -> dict[str, str]:
        try:
            index = self._client.get_model_repository_index(as_json=True, client_timeout=self.init_timeout_s)
        except InferenceServerException:
            return {}
        return {
            entry["name"]: entry.get("state", "UNKNOWN") + (f" ({entry['reason']})" if entry.get("reason") else "")
            for entry in index.get("models", [])
        }

    def _raise_if_absent(self, names: set[str]) -> None:
        states = self._model_states()
        absent = sorted(name for name in names if name not in states)
        if absent and states:
            raise TritonModelNotFound(
                f"Triton at {self.url} has no model {', '.join(map(repr, absent))} "
                f"in its repository (it has: {', '.join(sorted(states))})",
                model=absent[0],
            )
