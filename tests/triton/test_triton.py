"""The real tritonserver on 127.0.0.1 serving winnow's model repository over gRPC."""

from __future__ import annotations

import importlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from winnow.shared.triton import contract
from winnow.shared.triton.client import (
    TritonClient,
    TritonModelError,
    TritonModelNotFound,
    TritonTimeout,
)
from winnow.shared.triton.remote import (
    RemoteClipEncoder,
    RemoteFaceDetector,
    RemoteImageNSFW,
    RemoteLanguageIdentifier,
    RemoteNearDuplicateDescriptor,
    RemoteTextToxicity,
    remote_model,
)
from winnow.ops.triton.repository import ModelSpec, write_model_repository
from winnow.ops.triton.server import TritonServer, TritonServerError
from tests.triton import toy_models as toy
from tests.conftest import REPO_ROOT
from tests.triton.served_models import REAL_MODELS, TOY_MODELS

TEXTS = [
    "you idiot",
    "hello the world",
    "le chat noir",
    "",
    "HATE hate hate!",
    "naïve café, 日本語 🙂",
    "the " * 300,
]


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    """Real photos of several sizes (their heights give the toy face detector 0 to 3 faces)."""
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    crops = [photo[:height, :width] for photo, (height, width) in
             zip(photos, [(101, 90), (302, 451), (203, 150), (427, 640)], strict=True)]
    grey = np.repeat(data.camera()[:, :, None], 3, axis=2)
    return [*photos, *crops, grey, np.full((1, 1, 3), 200, np.uint8)]


def assert_same(remote, local) -> None:
    if isinstance(local, np.ndarray):
        assert remote.dtype == np.float32 and remote.shape == local.shape
        np.testing.assert_allclose(remote, local, rtol=1e-6, atol=1e-6)
    elif local and isinstance(local[0], tuple):  # language: (code, probability)
        assert [code for code, _ in remote] == [code for code, _ in local]
        np.testing.assert_allclose([p for _, p in remote], [p for _, p in local], rtol=1e-6)
    else:  # faces: one (K, 5) array per image
        assert len(remote) == len(local)
        for got, expected in zip(remote, local, strict=True):
            assert got.shape == expected.shape
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_server_serves_every_model_on_loopback(triton_server, triton_client):
    assert triton_server.grpc_url.startswith("127.0.0.1:")
    assert triton_server.start_seconds is not None
    for spec in TOY_MODELS:
        assert triton_client.model_ready(spec.name), spec.name
    config = triton_client.model_config("faces")
    assert config["backend"] == "python"
    assert config["max_batch_size"] == 8
    assert "dynamic_batching" in config


@pytest.mark.parametrize(
    ("make_remote", "local", "method", "inputs"),
    [
        (lambda c: RemoteTextToxicity(c, "toxicity"), toy.WordListToxicity(), "score", "texts"),
        (lambda c: RemoteImageNSFW(c, "nsfw"), toy.BrightnessNSFW(), "score", "images"),
        (lambda c: RemoteFaceDetector(c, "faces"), toy.GridFaceDetector(), "detect", "images"),
        (lambda c: RemoteNearDuplicateDescriptor(c, "near_duplicates"), toy.GridDescriptor(), "describe", "images"),
        (lambda c: RemoteClipEncoder(c, "clip_image", "clip_text"), toy.StatsClip(), "embed_images", "images"),
        (lambda c: RemoteClipEncoder(c, "clip_image", "clip_text"), toy.StatsClip(), "embed_texts", "texts"),
        (lambda c: RemoteLanguageIdentifier(c, "language"), toy.KeywordLanguage(), "detect", "texts"),
    ],
    ids=["toxicity", "nsfw", "faces", "near_duplicates", "clip_images", "clip_texts", "language"],
)
def test_remote_answers_as_in_process(triton_client, images, make_remote, local, method, inputs):
    remote = make_remote(triton_client)
    batch = images if inputs == "images" else TEXTS
    # more rows than max_batch_size, so the remote splits them into several requests
    batch = batch + batch[::-1]
    assert_same(getattr(remote, method)(batch), getattr(local, method)(batch))
    assert_same(getattr(remote, method)(batch[:1]), getattr(local, method)(batch[:1]))


def test_remote_attributes_and_empty_inputs(triton_client):
    descriptor = RemoteNearDuplicateDescriptor(triton_client, "near_duplicates")
    assert (descriptor.dim, descriptor.threshold) == (16, 0.9)
    assert descriptor.describe([]).shape == (0, 16)
    assert RemoteClipEncoder(triton_client, "clip_image", "clip_text").dim == 8
    assert RemoteTextToxicity(triton_client, "toxicity").score([]).shape == (0,)
    assert RemoteFaceDetector(triton_client, "faces").detect([]) == []
    assert RemoteLanguageIdentifier(triton_client, "language").detect([]) == []
    assert isinstance(remote_model("text_toxicity", triton_client, "toxicity"), RemoteTextToxicity)
    clip = remote_model("clip", triton_client, "clip")
    assert isinstance(clip, RemoteClipEncoder) and clip.name == "triton:clip_image+clip_text"
    with pytest.raises(ValueError, match="one tower of a CLIP model"):
        remote_model("clip_text", triton_client, "clip_text")


def test_remote_checks_inputs_like_in_process(triton_client):
    nsfw = RemoteImageNSFW(triton_client, "nsfw")
    with pytest.raises(ValueError, match="expected uint8"):
        nsfw.score([np.zeros((4, 4, 3), np.float32)])
    with pytest.raises(ValueError, match=r"expected \(H, W, 3\)"):
        nsfw.score([np.zeros((4, 4), np.uint8)])
    with pytest.raises(TypeError, match="list of strings"):
        RemoteTextToxicity(triton_client, "toxicity").score("one string")


def _inference_counts(url: str, model: str) -> tuple[int, int]:
    with grpcclient.InferenceServerClient(url) as raw:
        stats = raw.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def test_concurrent_requests_from_8_threads_share_batches(triton_server, triton_client):
    model = RemoteTextToxicity(triton_client, "toxicity")
    local = toy.WordListToxicity()
    inferences_before, executions_before = _inference_counts(triton_server.grpc_url, "toxicity")
    start = threading.Barrier(8)

    def work(worker: int) -> list[bool]:
        start.wait()
        same = []
        for call in range(10):
            texts = [f"{TEXTS[(worker + call) % len(TEXTS)]} {worker}", "you stupid moron", "fine"][: 1 + call % 3]
            same.append(np.allclose(model.score(texts), local.score(texts)))
        return same

    with ThreadPoolExecutor(8) as pool:
        results = [ok for oks in pool.map(work, range(8)) for ok in oks]
    assert all(results) and len(results) == 80
    inferences, executions = _inference_counts(triton_server.grpc_url, "toxicity")
    rows = sum(1 + call % 3 for call in range(10)) * 8
    assert inferences - inferences_before == rows
    # 80 requests: without dynamic batching they would take 80 executions
    assert executions - executions_before < 80 / 2


def test_corrupt_image_fails_only_its_own_request(triton_client, images):
    nsfw = RemoteImageNSFW(triton_client, "nsfw")
    expected = toy.BrightnessNSFW().score(images[:3])
    rows, lengths = contract.pack_rows([b"\xff\xd8\xff\xe0 this is no JPEG", contract.encode_image(images[0])[:-7]])
    barrier = threading.Barrier(8)

    def good(_):
        barrier.wait()
        return nsfw.score(images[:3])

    def corrupt():
        barrier.wait()
        return triton_client.infer("nsfw", {contract.IMAGE: rows, contract.IMAGE_LENGTH: lengths}, [contract.SCORE])

    with ThreadPoolExecutor(8) as pool:
        goods = [pool.submit(good, i) for i in range(7)]
        bad = pool.submit(corrupt)
        for future in goods:
            np.testing.assert_allclose(future.result(), expected, rtol=1e-6)
        with pytest.raises(TritonModelError, match="IMAGE row 0: neither a raw frame nor an image") as info:
            bad.result()
    assert info.value.status == "INVALID_ARGUMENT"
    assert info.value.model == "nsfw"
    # the server and the model go on serving
    np.testing.assert_allclose(nsfw.score(images[:3]), expected, rtol=1e-6)


def test_truncated_raw_frame_is_refused(triton_client, images):
    rows, lengths = contract.pack_rows([contract.encode_image(images[1])[:-7]])
    with pytest.raises(TritonModelError, match="raw image frame of 300x451 must be"):
        triton_client.infer("nsfw", {contract.IMAGE: rows, contract.IMAGE_LENGTH: lengths}, [contract.SCORE])


def test_encoded_image_bytes_are_accepted(triton_client, images):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(images[1]).save(buffer, format="PNG")
    rows, lengths = contract.pack_rows([buffer.getvalue()])
    answer = triton_client.infer("nsfw", {contract.IMAGE: rows, contract.IMAGE_LENGTH: lengths}, [contract.SCORE])
    np.testing.assert_allclose(answer[contract.SCORE].reshape(-1), toy.BrightnessNSFW().score(images[1:2]), rtol=1e-6)


def test_exception_inside_the_model_fails_only_its_request(triton_server, triton_client):
    model = RemoteTextToxicity(triton_client, "toxicity")
    local = toy.WordListToxicity()
    barrier = threading.Barrier(8)

    def call(worker: int):
        texts = [toy.POISON_TEXT] if worker == 3 else [f"idiot number {worker}", "hello"]
        barrier.wait()
        return model.score(texts)

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(call, worker) for worker in range(8)]
    for worker, future in enumerate(futures):
        if worker == 3:
            with pytest.raises(TritonModelError, match="refusing the poison text") as info:
                future.result()
            assert info.value.status == "INTERNAL"
        else:
            np.testing.assert_allclose(future.result(), local.score([f"idiot number {worker}", "hello"]))
    # the poison shared a batch with good requests, which were then answered one by one
    assert "failed on a batch of" in triton_server.log_path.read_text()


def test_missing_model_gives_a_clear_error(triton_client):
    rows, lengths = contract.pack_rows([b"hello"])
    with pytest.raises(TritonModelNotFound, match="'no_such_model' is not served"):
        triton_client.infer("no_such_model", {contract.TEXT: rows, contract.TEXT_LENGTH: lengths}, [contract.SCORE])
    started = time.monotonic()
    with pytest.raises(TritonModelNotFound, match="no model 'no_such_model' in its repository"):
        triton_client.wait_ready(["toxicity", "no_such_model"], timeout=30)
    assert time.monotonic() - started < 5  # known at once, not after the timeout
    with pytest.raises(TritonModelNotFound):
        RemoteTextToxicity(triton_client, "no_such_model")
    with pytest.raises(ValueError, match="serves text_toxicity, not image_nsfw"):
        RemoteImageNSFW(triton_client, "toxicity")


def test_client_times_out_cleanly_on_a_slow_model(triton_server):
    with TritonClient(triton_server.grpc_url, infer_timeout_s=0.5, retries=3) as client:
        slow = RemoteTextToxicity(client, "slow")
        started = time.monotonic()
        with pytest.raises(TritonTimeout, match="'slow' .* no answer within 0.5 s") as info:
            slow.score(["hello"])
        assert time.monotonic() - started < 2.5  # not retried
        assert isinstance(info.value, TimeoutError)
        # the server goes on serving other models meanwhile
        np.testing.assert_allclose(RemoteTextToxicity(client, "toxicity").score(["you idiot"]), [0.5])


@pytest.mark.parametrize("spec", REAL_MODELS, ids=[spec.name for spec in REAL_MODELS])
def test_real_offline_model_over_triton(triton_client, images, spec: ModelSpec):
    """The offline models of winnow.shared.models, loaded into the running server, answer as in-process."""
    module_name, _, attribute = spec.factory.partition(":")
    try:
        local = getattr(importlib.import_module(module_name), attribute)(**spec.factory_kwargs)
    except (ImportError, FileNotFoundError) as exc:
        pytest.skip(f"{spec.factory} cannot be built here: {exc}")
    triton_client.load_model(spec.name, timeout=180)
    remote = remote_model(spec.kind, triton_client, spec.name)
    method = contract.SIGNATURES[spec.kind].method
    batch = images if contract.SIGNATURES[spec.kind].item == contract.IMAGE else TEXTS + ["Der Hund schläft."]
    assert_same(getattr(remote, method)(batch), getattr(local, method)(batch))


def test_start_fails_with_the_reason_from_the_log(triton_install, tmp_path):
    broken = ModelSpec("broken", "tests.triton.toy_models:NoSuchModel", "text_toxicity")
    repository = write_model_repository(tmp_path / "repository", [broken])
    server = TritonServer(repository, tmp_path / "work", install=triton_install, python_path=[REPO_ROOT])
    with pytest.raises(TritonServerError, match="NoSuchModel"):
        server.start(timeout=120)
    assert server.proc is None


def test_start_retries_when_a_chosen_port_is_taken(triton_install, tmp_path, monkeypatch):
    import socket

    from winnow.ops.triton import server as server_module

    repository = write_model_repository(tmp_path / "repository", TOY_MODELS[:1])
    realfree_ports = server_module.free_ports
    calls = []
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]

        def first_port_taken(n: int) -> list[int]:
            calls.append(n)
            ports = realfree_ports(n)
            return [taken, *ports[1:]] if len(calls) == 1 else ports

        monkeypatch.setattr(server_module, "free_ports", first_port_taken)
        with TritonServer(repository, tmp_path / "work", install=triton_install, python_path=[REPO_ROOT]) as server:
            assert len(calls) == 2 and server.grpc_port != taken
            with TritonClient(server.grpc_url) as client:
                assert client.model_ready(TOY_MODELS[0].name)


def test_bytes_tensors_are_refused_before_they_reach_the_model(triton_client):
    """The bundled stub dies on a BYTES input under numpy 2; Triton must refuse it by the config first."""
    texts = np.array([[b"you idiot"]], dtype=np.object_)
    with pytest.raises(TritonModelError, match="BYTES"):
        triton_client.infer("toxicity", {contract.TEXT: texts, contract.TEXT_LENGTH: np.array([[9]], np.int32)},
                            [contract.SCORE])
    np.testing.assert_allclose(RemoteTextToxicity(triton_client, "toxicity").score(["you idiot"]), [0.5])
