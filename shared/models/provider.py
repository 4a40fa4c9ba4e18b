"""Model factories for stages: in-process by default, over Triton gRPC when a URL is configured.

Stages receive zero-argument factories and call them in ``setup()``, so constructing a stage
stays cheap and the choice of transport stays outside it.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from typing import Any

from winnow.shared.models.registry import load_model

_clients: dict[str, Any] = {}
_lock = threading.Lock()


def triton_client(url: str):
    """One shared Triton client per URL, made on first use (readiness is the caller's wait); closed at exit."""
    with _lock:
        if url not in _clients:
            from winnow.shared.triton.client import TritonClient

            _clients[url] = TritonClient(url)
        return _clients[url]


def close_triton_clients() -> None:
    """Close the shared clients (while grpc is still loaded: at exit it is torn down before them)."""
    with _lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.close()


atexit.register(close_triton_clients)


def model_factory(kind: str, preset: str, triton_url: str = "", **overrides: Any) -> Callable[[], Any]:
    def make():
        return load_model(kind, preset, triton=triton_client(triton_url) if triton_url else None, **overrides)

    return make


def clip_factory(arch: str, pretrained: str | None, triton_url: str = "", triton_model: str = "",
                 device: str = "cpu") -> Callable[[], Any]:
    def make():
        if triton_url:
            from winnow.shared.triton import remote

            return remote.remote_model("clip", triton_client(triton_url), triton_model)
        from winnow.shared.models.clip import OpenClipEncoder

        return OpenClipEncoder(arch, pretrained, device=device)

    return make
