"""Fetching against real local servers: refused ports, a forward proxy, robots.txt, blurred boxes, hashes."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from winnow.services.downloader.fetch import FetchError, FetchOptions, HttpFetcher, ProxySettings
from winnow.services.downloader.layout import ShardLayout
from winnow.services.downloader.resize import ResizeOptions
from winnow.services.downloader.stage import DownloadOptions, download_sample
from winnow.shared.shards import SUCCESS
from tests.downloader.conftest import LOOPBACK
from tests.infra.forward_proxy import ForwardProxy


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_refused_connection_is_connection_refused_and_not_retried():
    fetcher = HttpFetcher(FetchOptions(allow_networks=LOOPBACK, retries=3, backoff_s=2.0))
    started = time.monotonic()
    with pytest.raises(FetchError) as raised:
        fetcher.fetch(f"http://127.0.0.1:{_closed_port()}/x.jpg")
    assert raised.value.reason == "connection_refused"
    assert not raised.value.retryable
    assert time.monotonic() - started < 2.0, "no backoff: a refused port is not retried as a timeout"
    fetcher.close()


def test_proxy_variables_are_read_from_the_environment():
    assert ProxySettings.from_environment({}) is None
    settings = ProxySettings.from_environment({"http_proxy": "http://p:3128", "NO_PROXY": "internal.example,.corp"})
    assert settings.proxy_for("http", "images.example") == "http://p:3128"
    assert settings.proxy_for("https", "images.example") is None  # no HTTPS_PROXY
    assert settings.proxy_for("http", "internal.example") is None
    assert settings.proxy_for("http", "a.corp") is None


def test_downloads_go_through_the_proxy_and_the_guard_still_holds(image_server):
    url = image_server.img_url("rocket.jpg")
    with ForwardProxy() as proxy:
        through = HttpFetcher(FetchOptions(allow_networks=LOOPBACK, proxies=ProxySettings(http=proxy.url)))
        hits = image_server.hits["/img/rocket.jpg"]
        assert Image.open(io.BytesIO(through.fetch(url))).size == (640, 427)
        assert proxy.requests == [url]
        assert image_server.hits["/img/rocket.jpg"] == hits + 1

        # Without the allow-list, the loopback target is refused by name before the proxy sees it.
        guarded = HttpFetcher(FetchOptions(proxies=ProxySettings(http=proxy.url), retries=0))
        with pytest.raises(FetchError) as raised:
            guarded.fetch(url)
        assert raised.value.reason == "blocked_address"
        assert proxy.requests == [url]

        # NO_PROXY sends the request straight to the server.
        direct = HttpFetcher(FetchOptions(allow_networks=LOOPBACK,
                                          proxies=ProxySettings(http=proxy.url, no_proxy="127.0.0.1")))
        direct.fetch(url)
        assert proxy.requests == [url]
        for fetcher in (through, guarded, direct):
            fetcher.close()


@pytest.fixture
def site_with_robots(sample_images, tmp_path):
    """A plain static web server whose robots.txt disallows /private/ for every agent."""
    (tmp_path / "private").mkdir()
    (tmp_path / "public").mkdir()
    for folder in ("private", "public"):
        (tmp_path / folder / "rocket.jpg").write_bytes(sample_images.small_jpeg.read_bytes())
    (tmp_path / "robots.txt").write_text("User-agent: *\nDisallow: /private/\n")
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()


def test_robots_txt_is_read_once_per_host_and_respected_when_asked(site_with_robots):
    base, requests = site_with_robots
    polite = HttpFetcher(FetchOptions(allow_networks=LOOPBACK, respect_robots_txt=True, retries=0))
    assert polite.fetch(f"{base}/public/rocket.jpg")
    with pytest.raises(FetchError) as raised:
        polite.fetch(f"{base}/private/rocket.jpg")
    assert raised.value.reason == "robots_disallowed"
    assert requests.count("/robots.txt") == 1
    assert "/private/rocket.jpg" not in requests
    # Off by default, as in img2dataset.
    assert HttpFetcher(FetchOptions(allow_networks=LOOPBACK)).fetch(f"{base}/private/rocket.jpg")


def test_boxes_are_blurred_before_resizing(fetcher, image_server):
    url = image_server.img_url("large.jpg")
    options = DownloadOptions(fetch=fetcher.options, resize=ResizeOptions(image_size=256, resize_mode="border"))
    plain = download_sample(fetcher, url, options)
    blurred = download_sample(fetcher, url, options, boxes=[[0.0, 0.0, 0.5, 0.5]])
    assert plain.status == blurred.status == SUCCESS
    a = np.asarray(Image.open(io.BytesIO(plain.image)), dtype=float)
    b = np.asarray(Image.open(io.BytesIO(blurred.image)), dtype=float)
    h, w = a.shape[:2]
    inside = np.abs(a[h // 8: h // 4, w // 8: w // 4] - b[h // 8: h // 4, w // 8: w // 4]).mean()
    far = np.abs(a[-h // 8:, -w // 8:] - b[-h // 8:, -w // 8:]).mean()
    assert inside > 5 * max(far, 0.5), (inside, far)


def test_compute_hash_and_verify_hash_with_img2dataset_types(fetcher, image_server, sample_images):
    url = image_server.img_url("rocket.jpg")
    data = sample_images.small_jpeg.read_bytes()
    layout = ShardLayout(img2dataset_columns=True, compute_hash="md5")
    options = DownloadOptions(fetch=fetcher.options, layout=layout, verify_hash=("md5_col", "md5"))
    good = download_sample(fetcher, url, options, expected_hash=hashlib.md5(data).hexdigest())
    assert good.status == SUCCESS and good.hashes == {"md5": hashlib.md5(data).hexdigest()}
    bad = download_sample(fetcher, url, options, expected_hash="0" * 32)
    assert bad.reason == "hash_mismatch"
    with pytest.raises(ValueError, match="verify_hash"):
        DownloadOptions(verify_hash=("sha256", "sha1"))


def test_disallowed_header_directives_are_configurable(image_server):
    url = image_server.url("/optout/noml/rocket.jpg")
    strict = HttpFetcher(FetchOptions(allow_networks=LOOPBACK, disallowed_header_directives=("noai", "noml")))
    with pytest.raises(FetchError) as raised:
        strict.fetch(url)
    assert raised.value.reason == "opt_out"
    switched_off = HttpFetcher(FetchOptions(allow_networks=LOOPBACK, disallowed_header_directives=()))
    assert switched_off.fetch(image_server.url("/optout/noai/rocket.jpg"))
    strict.close()
    switched_off.close()
