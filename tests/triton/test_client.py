"""The client and the installation, without a running server."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from winnow.shared.triton import contract
from winnow.shared.triton.client import TritonClient, TritonUnavailable
from winnow.ops.triton.server import TritonServerError, find_tritonserver


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_unavailable_after_retries():
    with TritonClient(f"127.0.0.1:{_closed_port()}", init_timeout_s=2, retries=2, backoff_s=0.05) as client:
        rows, lengths = contract.pack_rows([b"x"])
        started = time.monotonic()
        with pytest.raises(TritonUnavailable, match="is unavailable") as info:
            client.infer("m", {contract.TEXT: rows, contract.TEXT_LENGTH: lengths}, [contract.SCORE])
        assert info.value.status == "UNAVAILABLE"
        assert time.monotonic() - started >= 0.05 + 0.1  # two backoffs
        with pytest.raises(TritonUnavailable, match="not ready within 0.5 s"):
            client.wait_ready(["m"], timeout=0.5)
        assert client.model_ready("m") is False


def test_triton_home_must_be_an_unpacked_wheel(tmp_path, monkeypatch):
    monkeypatch.setenv("WINNOW_TRITON_HOME", str(tmp_path))
    with pytest.raises(TritonServerError, match="is not an unpacked nvidia-pytriton wheel"):
        find_tritonserver()


def test_triton_home_is_used_as_it_is(triton_install, monkeypatch):
    monkeypatch.setenv("WINNOW_TRITON_HOME", str(triton_install.root))
    install = find_tritonserver(fetch=False)
    assert install.root == triton_install.root
    assert install.binary.is_file() and install.stub().is_file()


def test_bytes_and_numeric_inputs_map_to_triton_types():
    texts = TritonClient._infer_input("T", np.array([["a"], ["bc"]], dtype=np.object_))
    assert (texts.datatype(), texts.shape()) == ("BYTES", [2, 1])
    assert TritonClient._infer_input("X", np.zeros((3, 4), np.float32)).datatype() == "FP32"
    with pytest.raises(TypeError, match="no Triton equivalent"):
        TritonClient._infer_input("C", np.zeros(2, np.complex64))


def test_a_model_still_loading_is_unavailable_not_missing():
    """What a restarting Triton answered in the chaos run (tests/chaos) for a model whose versions
    were not loaded yet: a wait-and-retry outage, unlike a model the repository does not have."""
    from tritonclient.utils import InferenceServerException

    from winnow.shared.outages import is_outage
    from winnow.shared.triton.client import TritonModelNotFound

    client = TritonClient("127.0.0.1:1")
    loading = InferenceServerException(
        "Request for unknown model: 'faces_centerface' has no available versions", status="StatusCode.NOT_FOUND")
    missing = InferenceServerException("Request for unknown model: 'nope' is not found",
                                       status="StatusCode.NOT_FOUND")
    assert isinstance(client._translate(loading, "faces_centerface", 1.0), TritonUnavailable)
    assert is_outage(client._translate(loading, "faces_centerface", 1.0))
    assert type(client._translate(missing, "nope", 1.0)) is TritonModelNotFound
    assert not is_outage(client._translate(missing, "nope", 1.0))


def test_a_closed_client_lets_go_of_its_channel_and_refuses_calls():
    """The library's client is released at close(), not at interpreter exit, when grpc is torn down
    and its __del__ printed an ignored AttributeError at the end of a CI run."""
    import gc
    import weakref

    from winnow.shared.outages import is_outage
    from winnow.shared.triton.client import TritonError

    client = TritonClient(f"127.0.0.1:{_closed_port()}", init_timeout_s=1, retries=0)
    library_client = weakref.ref(client._client)
    client.close()
    gc.collect()
    assert library_client() is None
    with pytest.raises(TritonError, match="is closed") as info:
        client.model_config("m")
    assert not is_outage(info.value)  # a closed client is a bug to report, not an outage to wait out
    client.close()
