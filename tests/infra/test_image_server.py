"""Checks that the test image server behaves as specified (stdlib clients only)."""

from __future__ import annotations

import http.client
import io
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image

from tests.infra.image_server import HUGE_DECLARED_LENGTH, NOT_IMAGE_BODY, ImageServer
from tests.infra.images import (
    make_jpeg_corpus,
    openclipart_images,
    skimage_images,
    title_from_path,
)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **kw):
        return None


_no_redirect_opener = urllib.request.build_opener(_NoRedirect)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("imgs")
    make_jpeg_corpus(d, 4, min_side=800)
    by_name = {p.name: p for p in skimage_images()}
    shutil.copy(by_name["coffee.png"], d / "coffee.png")
    return d


@pytest.fixture(scope="module")
def server(corpus):
    with ImageServer(corpus) as srv:
        yield srv


@pytest.fixture(scope="module")
def jpg(corpus) -> str:
    return sorted(p.name for p in corpus.glob("*.jpg"))[0]


def get(url: str, **kw):
    """(status, headers, body) without raising on HTTP errors."""
    req = urllib.request.Request(url, **kw)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers, e.read()


def decode(body: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(body))
    im.load()
    return im


# -- images.py ---------------------------------------------------------------


def test_skimage_images_are_real_images():
    imgs = skimage_images()
    names = {p.name for p in imgs}
    assert {"astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"} <= names
    assert all(p.suffix in (".png", ".jpg") for p in imgs)


def test_title_from_path():
    assert title_from_path("red_apple.png") == "red apple"
    assert title_from_path("/x/y/red-apple.png") == "red apple"
    assert title_from_path("red_apple_01.png") == "red apple"
    assert title_from_path("cormorant-md.png") == "cormorant"
    assert title_from_path("00042_red_apple.jpg") == "red apple"
    assert title_from_path("aircraft_jarno_vasamaa2.png") == "aircraft jarno vasamaa"


def test_openclipart_images_deterministic():
    a = openclipart_images(limit=20)
    assert a == openclipart_images(limit=20)
    assert a == sorted(a, key=lambda p: p.as_posix())
    if a:  # package installed
        assert len(a) == 20 and all(p.suffix == ".png" for p in a)
        assert len(openclipart_images()) > 1000


def test_make_jpeg_corpus(tmp_path):
    paths = make_jpeg_corpus(tmp_path, 6, min_side=600)
    assert len(paths) == 6 and all(p.exists() for p in paths)
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "JPEG"
            assert min(im.size) >= 600
    assert len({p.read_bytes() for p in paths}) == 6
    mtimes = [p.stat().st_mtime_ns for p in paths]
    again = make_jpeg_corpus(tmp_path, 6, min_side=600)  # cached: not rewritten
    assert again == paths
    assert [p.stat().st_mtime_ns for p in paths] == mtimes


# -- image_server.py -------------------------------------------------------------


def test_img_serves_file_with_type_and_length(server, corpus, jpg):
    status, headers, body = get(server.url(f"/img/{jpg}"))
    assert status == 200
    assert headers["Content-Type"] == "image/jpeg"
    assert int(headers["Content-Length"]) == len(body)
    assert body == (corpus / jpg).read_bytes()
    assert min(decode(body).size) >= 800
    status, headers, body = get(server.url("/img/coffee.png"))
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert decode(body).format == "PNG"
    assert server.hits[f"/img/{jpg}"] >= 1


def test_img_missing_and_unknown_route(server):
    assert get(server.url("/img/nope.jpg"))[0] == 404
    assert get(server.url("/no/such/route"))[0] == 404
    assert get(server.url("/img/../../etc/passwd"))[0] == 404


def test_head(server, corpus, jpg):
    req = urllib.request.Request(server.url(f"/img/{jpg}"), method="HEAD")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
        assert int(r.headers["Content-Length"]) == (corpus / jpg).stat().st_size
        assert r.read() == b""


def test_keep_alive_reuses_connection(server, jpg):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", f"/img/{jpg}")
        r = conn.getresponse()
        assert r.status == 200 and r.version == 11
        r.read()
        sock = conn.sock
        assert sock is not None
        for path in (f"/img/{jpg}", "/status/404", f"/img/{jpg}"):
            conn.request("GET", path)
            r = conn.getresponse()
            r.read()
            assert conn.sock is sock  # same TCP connection
    finally:
        conn.close()


@pytest.mark.parametrize("code", [400, 403, 404, 410, 500, 502, 503])
def test_status(server, code):
    status, headers, body = get(server.url(f"/status/{code}"))
    assert status == code
    assert str(code).encode() in body and len(body) < 200


def test_status_retry_after_query(server):
    status, headers, _ = get(server.url("/status/429?retry_after=3"))
    assert status == 429 and headers["Retry-After"] == "3"


@pytest.mark.parametrize("kind,code", [("flaky429", 429), ("flaky503", 503)])
def test_flaky(server, corpus, jpg, kind, code):
    token = uuid.uuid4().hex
    url = server.url(f"/{kind}/{token}/{jpg}")
    status, headers, body = get(url)
    assert status == code and headers["Retry-After"] == "1"
    status, headers, body = get(url)
    assert status == 200 and body == (corpus / jpg).read_bytes()
    assert get(url)[0] == 200
    # another token starts fresh
    assert get(server.url(f"/{kind}/{uuid.uuid4().hex}/{jpg}"))[0] == code
    assert server.hits[f"/{kind}/{token}/{jpg}"] == 3


def test_flaky_fail_n(server, jpg):
    url = server.url(f"/flaky503/{uuid.uuid4().hex}/{jpg}?fail=2")
    assert [get(url)[0] for _ in range(3)] == [503, 503, 200]


def test_slow(server, corpus, jpg):
    t0 = time.monotonic()
    status, _, body = get(server.url(f"/slow/0.5/{jpg}"))
    assert time.monotonic() - t0 >= 0.5
    assert status == 200 and body == (corpus / jpg).read_bytes()
    # a client timeout shorter than the delay fires before any header arrives
    with pytest.raises((socket.timeout, TimeoutError, urllib.error.URLError)):
        urllib.request.urlopen(server.url(f"/slow/2/{jpg}"), timeout=0.3).read()


def test_trickle(server, corpus, jpg):
    data = (corpus / jpg).read_bytes()
    # small file so the test is quick: 3 chunks -> 2 pauses of 0.2 s
    chunk = len(data) // 3 + 1
    t0 = time.monotonic()
    with urllib.request.urlopen(server.url(f"/trickle/{jpg}?chunk={chunk}"), timeout=5) as r:
        first = time.monotonic() - t0
        assert int(r.headers["Content-Length"]) == len(data)
        body = r.read()
    total = time.monotonic() - t0
    assert body == data
    assert first < 0.3 and total >= 0.4
    # default: 4 KiB chunks every 0.2 s -> headers at once, body takes long
    t0 = time.monotonic()
    with urllib.request.urlopen(server.url(f"/trickle/{jpg}"), timeout=5) as r:
        assert time.monotonic() - t0 < 0.3
        got = r.read(8192)
        assert len(got) <= 8192
    # client closed early; server must cope (checked by later tests still passing)


def test_truncated(server, corpus, jpg):
    data = (corpus / jpg).read_bytes()
    with urllib.request.urlopen(server.url(f"/truncated/{jpg}"), timeout=5) as r:
        assert int(r.headers["Content-Length"]) == len(data)
        with pytest.raises(http.client.IncompleteRead) as ei:
            r.read()
    assert ei.value.partial == data[: len(data) // 2]


def test_truncated_image(server, corpus, jpg):
    data = (corpus / jpg).read_bytes()
    status, headers, body = get(server.url(f"/truncated-image/{jpg}"))
    assert status == 200
    assert int(headers["Content-Length"]) == len(body) == int(len(data) * 0.6)
    assert body == data[: len(body)]
    with pytest.raises(OSError):  # PIL: "image file is truncated"
        decode(body)


def test_notimage(server):
    status, headers, body = get(server.url("/notimage"))
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert body == NOT_IMAGE_BODY and body.lstrip().lower().startswith(b"<!doctype html")
    with pytest.raises(Image.UnidentifiedImageError):
        decode(body)


def test_huge_declared(server):
    t0 = time.monotonic()
    r = urllib.request.urlopen(server.url("/huge-declared"), timeout=5)
    try:
        assert time.monotonic() - t0 < 0.5  # headers come at once
        assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg"
        assert int(r.headers["Content-Length"]) == HUGE_DECLARED_LENGTH
    finally:
        r.close()  # refuse without reading the body
    # and if someone does read it: a few KB, then the connection closes
    r = urllib.request.urlopen(server.url("/huge-declared"), timeout=5)
    with pytest.raises(http.client.IncompleteRead) as ei:
        r.read()
    assert 0 < len(ei.value.partial) <= 8192


def test_bomb(server):
    status, headers, body = get(server.url("/bomb.png"))
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert len(body) < 1_000_000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(body))
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        im = Image.open(io.BytesIO(body))  # header only
        assert im.size == (30000, 30000) and im.mode == "1"
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    assert (server.tmp_dir / "bomb.png").read_bytes() == body


@pytest.mark.parametrize(
    "directive", ["noai", "noimageai", "noindex", "noimageindex", "otherbot: noai", "none", "all"]
)
def test_optout(server, corpus, jpg, directive):
    status, headers, body = get(server.url(f"/optout/{quote(directive)}/{jpg}"))
    assert status == 200 and headers["X-Robots-Tag"] == directive
    assert body == (corpus / jpg).read_bytes()


@pytest.mark.parametrize(
    "target", ["http://169.254.169.254/latest/meta-data", "http://10.0.0.1/x?a=1&b=2"]
)
def test_redirect_to_private(server, target):
    url = server.url("/redirect?to=" + quote(target, safe=""))
    with pytest.raises(urllib.error.HTTPError) as ei:
        _no_redirect_opener.open(url, timeout=5)
    assert ei.value.code == 302 and ei.value.headers["Location"] == target
    ei.value.close()


def test_redirect_to_self(server, corpus, jpg):
    target = server.url(f"/img/{jpg}")
    status, _, body = get(server.url("/redirect?to=" + quote(target, safe="")))
    assert status == 200 and body == (corpus / jpg).read_bytes()


def test_redirect_chain(server, corpus, jpg):
    server.hits.clear()
    status, _, body = get(server.url(f"/redirect-chain/3/{jpg}"))
    assert status == 200 and body == (corpus / jpg).read_bytes()
    assert [server.hits[f"/redirect-chain/{i}/{jpg}"] for i in (3, 2, 1, 0)] == [1, 1, 1, 1]
    with pytest.raises(urllib.error.HTTPError) as ei:
        _no_redirect_opener.open(server.url(f"/redirect-chain/2/{jpg}"), timeout=5)
    assert ei.value.code == 302
    assert ei.value.headers["Location"] == server.url(f"/redirect-chain/1/{jpg}")
    ei.value.close()


def test_mislabeled(server, corpus, jpg):
    status, headers, body = get(server.url("/mislabeled/coffee.png"))
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert body == (corpus / "coffee.png").read_bytes()
    assert decode(body).format == "PNG"
    # a JPEG source is re-encoded to PNG
    status, headers, body = get(server.url(f"/mislabeled/{jpg}"))
    assert headers["Content-Type"] == "image/jpeg" and decode(body).format == "PNG"


def test_echo_ua(server):
    ua = "winnow-test/1.0 (+https://example.org/bot)"
    status, _, body = get(server.url("/echo-ua"), headers={"User-Agent": ua})
    assert status == 200 and ua in body.decode()
    assert server.last_user_agent == ua


def test_many_requests_fast(server, corpus):
    """5,000 keep-alive requests from 8 threads complete quickly."""
    names = sorted(p.name for p in corpus.iterdir())
    sizes = {n: (corpus / n).stat().st_size for n in names}
    per_thread = 625

    def worker(k: int) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        ok = 0
        try:
            for i in range(per_thread):
                n = names[(k + i) % len(names)]
                conn.request("GET", f"/img/{n}")
                r = conn.getresponse()
                ok += r.status == 200 and len(r.read()) == sizes[n]
        finally:
            conn.close()
        return ok

    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as ex:
        ok = sum(ex.map(worker, range(8)))
    elapsed = time.monotonic() - t0
    assert ok == 8 * per_thread
    assert elapsed < 30, elapsed


def test_client_disconnects_are_quiet(server, jpg, capfd):
    for path in (f"/trickle/{jpg}", "/huge-declared", f"/img/{jpg}"):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        s.recv(100)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST
    time.sleep(0.6)
    assert get(server.url("/status/200"))[0] == 200
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err


def test_stop_releases_threads_and_port(corpus, jpg):
    srv = ImageServer(corpus)
    base = srv.start()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    conn.request("GET", f"/img/{jpg}")
    conn.getresponse().read()  # leaves an idle keep-alive connection open
    before = threading.active_count()
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 3
    conn.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(base + "/status/200", timeout=1)
    time.sleep(0.2)
    assert threading.active_count() < before
