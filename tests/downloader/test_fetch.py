"""HttpFetcher against the real local image server: success, every failure route, the guards."""

from __future__ import annotations

import contextlib
import email.utils
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

import pytest

from winnow.services.downloader.fetch import DEFAULT_USER_AGENT, FetchError, FetchOptions, HttpFetcher


@contextlib.contextmanager
def fetcher_with(options: FetchOptions, **changes) -> Iterator[HttpFetcher]:
    fetcher = HttpFetcher(replace(options, **changes))
    try:
        yield fetcher
    finally:
        fetcher.close()


def failure(fetcher: HttpFetcher, url: str) -> FetchError:
    with pytest.raises(FetchError) as info:
        fetcher.fetch(url)
    return info.value


def timed_failure(fetcher: HttpFetcher, url: str) -> tuple[FetchError, float]:
    start = time.monotonic()
    error = failure(fetcher, url)
    return error, time.monotonic() - start


def token() -> str:
    return uuid.uuid4().hex[:12]


# -- success --------------------------------------------------------------------------------


@pytest.mark.parametrize("attr", ["large_jpeg", "small_jpeg", "alpha_png"])
def test_fetch_returns_the_served_bytes(fetcher, image_server, sample_images, attr):
    path = getattr(sample_images, attr)
    assert fetcher.fetch(image_server.img_url(path.name)) == path.read_bytes()


def test_mislabeled_content_type_does_not_matter(fetcher, image_server):
    body = fetcher.fetch(image_server.url("/mislabeled/rocket.jpg"))
    assert body.startswith(b"\x89PNG\r\n\x1a\n")


def test_default_user_agent_is_sent(fetcher, image_server):
    assert fetcher.fetch(image_server.url("/echo-ua")) == f"User-Agent: {DEFAULT_USER_AGENT}\n".encode()


def test_configured_user_agent_is_sent(fetch_options, image_server):
    agent = "winnow-test/1.0 (+https://example.org/bot)"
    with fetcher_with(fetch_options, user_agent=agent) as fetcher:
        assert fetcher.fetch(image_server.url("/echo-ua")) == f"User-Agent: {agent}\n".encode()


# -- HTTP errors and retries ----------------------------------------------------------------


def test_missing_file_is_http_404_and_not_retried(fetcher, image_server):
    path = f"/img/missing-{token()}.jpg"
    error = failure(fetcher, image_server.url(path))
    assert error.reason == "http_404"
    assert image_server.hits[path] == 1


def test_server_error_is_retried_then_reported(fetcher, fetch_options, image_server):
    path = f"/status/500/{token()}"  # the trailing segment only makes the path unique
    assert failure(fetcher, image_server.url(path)).reason == "http_500"
    assert image_server.hits[path] == fetch_options.retries + 1


@pytest.mark.parametrize("route", ["flaky429", "flaky503"])
def test_rate_limit_then_success_honours_retry_after(fetcher, image_server, sample_images, route):
    path = f"/{route}/{token()}/rocket.jpg"
    start = time.monotonic()
    body = fetcher.fetch(image_server.url(path))
    elapsed = time.monotonic() - start
    assert body == sample_images.small_jpeg.read_bytes()
    assert image_server.hits[path] == 2
    assert elapsed >= 0.95, f"Retry-After: 1 was not honoured (retried after {elapsed:.2f}s)"


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_over_the_cap_gives_up_as_rate_limited(fetcher, image_server, code):
    path = f"/status/{code}/{token()}"
    error, elapsed = timed_failure(fetcher, image_server.url(f"{path}?retry_after=100"))
    assert error.reason == "rate_limited"
    assert image_server.hits[path] == 1
    assert elapsed < 0.5, "a Retry-After over the cap must not be slept"


def test_retry_after_as_http_date_is_understood(fetcher, image_server):
    an_hour_ahead = email.utils.formatdate(time.time() + 3600, usegmt=True)
    error = failure(fetcher, image_server.url(f"/status/429?retry_after={quote(an_hour_ahead)}"))
    assert error.reason == "rate_limited"


# -- time caps ------------------------------------------------------------------------------


def test_slow_headers_beyond_the_timeout_time_out(fetch_options, image_server):
    with fetcher_with(fetch_options, timeout=0.5, retries=0) as fetcher:
        error, elapsed = timed_failure(fetcher, image_server.url("/slow/3/rocket.jpg"))
    assert error.reason == "timeout"
    assert elapsed < 1.5


def test_trickle_beyond_the_total_timeout_times_out(fetch_options, image_server, sample_images):
    # large.jpg trickles at 4 KiB per 0.2 s (~20 s): each read is quick, only the total cap stops it.
    assert sample_images.large_jpeg.stat().st_size > 200_000
    with fetcher_with(fetch_options, timeout=1.0, total_timeout=1.0, retries=0) as fetcher:
        error, elapsed = timed_failure(fetcher, image_server.url("/trickle/large.jpg"))
    assert error.reason == "timeout"
    assert elapsed < 2.5, f"the total timeout of 1 s was overrun ({elapsed:.1f}s)"


def test_trickle_within_the_total_timeout_succeeds(fetcher, image_server, sample_images):
    body = fetcher.fetch(image_server.url("/trickle/rocket.jpg?chunk=32768&delay=0.05"))
    assert body == sample_images.small_jpeg.read_bytes()


def test_connection_closed_early_is_truncated(fetcher, image_server):
    assert failure(fetcher, image_server.url("/truncated/large.jpg")).reason == "truncated"


# -- byte caps ------------------------------------------------------------------------------


def test_huge_declared_length_is_refused_without_reading_the_body(fetcher, image_server):
    # The server would need >= 0.75 s to send its 4 KiB; refusing on the header is immediate.
    error, elapsed = timed_failure(fetcher, image_server.url("/huge-declared"))
    assert error.reason == "too_large"
    assert elapsed < 0.5


def test_declared_length_over_max_bytes_is_too_large(fetch_options, image_server, sample_images):
    cap = sample_images.large_jpeg.stat().st_size - 1
    with fetcher_with(fetch_options, max_bytes=cap) as fetcher:
        assert failure(fetcher, image_server.img_url("large.jpg")).reason == "too_large"
        assert fetcher.fetch(image_server.img_url("rocket.jpg")) == sample_images.small_jpeg.read_bytes()


class _UndeclaredLengthHandler(BaseHTTPRequestHandler):
    """Sends a file with chunked transfer encoding: no Content-Length to refuse it by."""

    protocol_version = "HTTP/1.1"
    body = b""

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(0, len(self.body), 16384):
            piece = self.body[i:i + 16384]
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def undeclared_length_url(sample_images) -> Iterator[str]:
    handler = type("Handler", (_UndeclaredLengthHandler,), {"body": sample_images.large_jpeg.read_bytes()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/large.jpg"
    server.shutdown()
    server.server_close()


def test_streamed_body_over_max_bytes_is_too_large(fetch_options, undeclared_length_url, sample_images):
    size = sample_images.large_jpeg.stat().st_size
    with fetcher_with(fetch_options, max_bytes=size // 2) as fetcher:
        assert failure(fetcher, undeclared_length_url).reason == "too_large"
    with fetcher_with(fetch_options, max_bytes=size) as fetcher:
        assert fetcher.fetch(undeclared_length_url) == sample_images.large_jpeg.read_bytes()


# -- X-Robots-Tag opt-outs ------------------------------------------------------------------


@pytest.mark.parametrize("directive", [
    "noai", "noimageai", "noindex", "noimageindex", "none",
    "NoAI", "noindex, nofollow", "winnow: noai", "Winnow: noimageai",
])
def test_opt_out_directives_are_honoured(fetcher, image_server, directive):
    error = failure(fetcher, image_server.url(f"/optout/{quote(directive, safe='')}/rocket.jpg"))
    assert error.reason == "opt_out"


@pytest.mark.parametrize("directive", ["otherbot: noai", "googlebot: noindex", "nofollow", "noarchive", "all"])
def test_directives_for_others_or_harmless_ones_do_not_opt_out(fetcher, image_server, sample_images, directive):
    body = fetcher.fetch(image_server.url(f"/optout/{quote(directive, safe='')}/rocket.jpg"))
    assert body == sample_images.small_jpeg.read_bytes()


# -- the address guard on the wire ----------------------------------------------------------


@pytest.mark.parametrize("target", [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://10.0.0.1/",
    "http://192.168.1.1:8080/admin",
    "http://[::1]:80/",
    "http://[::ffff:10.0.0.1]/",
])
def test_redirect_to_an_internal_address_is_blocked(fetcher, image_server, target):
    error, elapsed = timed_failure(fetcher, image_server.url(f"/redirect?to={quote(target, safe='')}"))
    assert error.reason == "blocked_address"
    assert elapsed < 0.9, "a blocked address is final, not retried or waited on"


def test_redirect_to_file_scheme_is_refused(fetcher, image_server):
    error = failure(fetcher, image_server.url(f"/redirect?to={quote('file:///etc/passwd', safe='')}"))
    assert error.reason == "unsupported_scheme"


def test_redirect_to_an_allow_listed_address_is_followed(fetcher, image_server, sample_images):
    target = image_server.img_url("rocket.jpg")
    assert fetcher.fetch(image_server.url(f"/redirect?to={quote(target, safe='')}")) == \
        sample_images.small_jpeg.read_bytes()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_default_policy_blocks_loopback_before_sending_a_request(image_server, host):
    path = f"/img/{token()}.jpg"
    with fetcher_with(FetchOptions(), retries=0) as fetcher:  # no allow-list
        error = failure(fetcher, f"http://{host}:{image_server.port}{path}")
    assert error.reason == "blocked_address"
    assert image_server.hits[path] == 0, "the request reached the server"


# -- redirects and URLs ---------------------------------------------------------------------


def test_redirect_chain_within_the_limit_is_followed(fetcher, fetch_options, image_server, sample_images):
    body = fetcher.fetch(image_server.url(f"/redirect-chain/{fetch_options.max_redirects}/rocket.jpg"))
    assert body == sample_images.small_jpeg.read_bytes()


def test_redirect_chain_over_the_limit_is_too_many_redirects(fetcher, fetch_options, image_server):
    hops = fetch_options.max_redirects + 1
    last_hop = "/redirect-chain/0/rocket.jpg"
    before = image_server.hits[last_hop]
    error = failure(fetcher, image_server.url(f"/redirect-chain/{hops}/rocket.jpg"))
    assert error.reason == "too_many_redirects"
    assert image_server.hits[last_hop] == before, "the hop past the limit was requested"


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://example.com/image.jpg", "unsupported_scheme"),
    ("file:///etc/passwd", "unsupported_scheme"),
    ("gopher://127.0.0.1:70/", "unsupported_scheme"),
    ("data:image/png;base64,iVBORw0KGgo=", "unsupported_scheme"),
    ("", "unsupported_scheme"),
    ("http:///no-host.jpg", "invalid_url"),
    ("http://[::1/unclosed.jpg", "invalid_url"),
    ("http://127.0.0.1:99999/port.jpg", "invalid_url"),
])
def test_unusable_urls_are_refused_with_a_reason(fetcher, url, reason):
    error, elapsed = timed_failure(fetcher, url)
    assert error.reason == reason
    assert elapsed < 0.5


# -- per-domain concurrency -----------------------------------------------------------------


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda e: (e[0], e[1]))
    current = peak = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def test_per_domain_concurrency_is_respected(fetch_options, image_server):
    delay, limit, requests = 0.5, 2, 8

    def fetch_timed(i: int) -> float:
        fetcher.fetch(image_server.url(f"/slow/{delay}/rocket.jpg"))
        return time.monotonic()

    with fetcher_with(fetch_options, per_domain_concurrency=limit) as fetcher, \
            ThreadPoolExecutor(max_workers=requests) as pool:
        start = time.monotonic()
        ends = list(pool.map(fetch_timed, range(requests)))
    elapsed = time.monotonic() - start
    # Each request was in flight at least during the server's sleep, just before it ended.
    in_flight = [(end - delay + 0.05, end - 0.05) for end in ends]
    assert max_overlap(in_flight) <= limit
    assert elapsed >= requests / limit * delay - 0.05
    assert elapsed < requests * delay, "requests to one domain ran one at a time, not two"


def test_concurrency_limit_is_per_domain_not_global(fetch_options, image_server):
    hosts = ["127.0.0.1", "localhost"]
    with fetcher_with(fetch_options, per_domain_concurrency=1) as fetcher, ThreadPoolExecutor(2) as pool:
        start = time.monotonic()
        list(pool.map(lambda host: fetcher.fetch(f"http://{host}:{image_server.port}/slow/0.6/rocket.jpg"), hosts))
    assert time.monotonic() - start < 1.1, "two domains did not fetch in parallel"
