"""HTTP fetching for the downloader: guarded, capped, polite, retried.

- Only http(s); every connection's peer address is checked by an ``AddressPolicy`` (after DNS
  resolution and on every redirect hop, which is followed by hand).
- Caps: bytes (declared ``Content-Length`` refused before reading, streamed bytes counted),
  time per socket operation and for the whole request.
- ``X-Robots-Tag`` opt-outs (``noai``, ``noimageai``, ``noindex``, ``noimageindex``, ``none``),
  for everyone or for our user-agent token, are honoured and recorded as ``opt_out``.
- Retries with exponential backoff and jitter on 429, 5xx, timeouts and broken connections;
  ``Retry-After`` (seconds or an HTTP date) is honoured up to a cap. The loop is our own rather
  than urllib3's ``Retry`` or tenacity: it must retry failures raised while the body streams
  (truncation, the whole-request deadline), give up with ``rate_limited`` when ``Retry-After``
  is over the cap instead of sleeping through it, and re-run the address guard on each
  redirect hop, which ``Retry`` cannot do from inside ``urlopen``.
- A refused connection is ``connection_refused`` and is not retried (urllib3 raises it as a
  subclass of its connect-timeout error, so it is told apart before timeouts).
- ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` (``ProxySettings.from_environment``): requests go
  through the proxy; the address guard then judges the target by resolving its name here,
  before the request is sent, since the socket's peer is the proxy. What the proxy itself
  resolves (DNS rebinding behind it) and where it forwards redirects is out of our sight.
- ``respect_robots_txt``: each host's ``robots.txt`` is read once (protego) and disallowed
  URLs are recorded as ``robots_disallowed``.
- At most ``per_domain_concurrency`` requests in flight per host; the time a request waits for
  its turn does not count against its timeouts.
"""

from __future__ import annotations

import email.utils
import ipaddress
import http.client
import os
import random
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (HTTPError, IncompleteRead, LocationParseError, NameResolutionError, SSLError,
                                TimeoutError)

from winnow.shared.address_guard import AddressPolicy, BlockedAddressError

DEFAULT_USER_AGENT = "Mozilla/5.0 (compatible; winnow/0.1; +https://github.com/winnow-data/winnow)"
DISALLOWED_DIRECTIVES = ("noai", "noimageai", "noindex", "noimageindex", "none")
ROBOTS_MAX_BYTES = 512 * 1024  # Google reads the first 500 KiB of a robots.txt
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
RETRY_CODES = frozenset({429, 500, 502, 503, 504})


class FetchError(Exception):
    """A URL could not be fetched; ``reason`` is the ledger's machine-readable code."""

    def __init__(self, reason: str, message: str, retryable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True)
class FetchOptions:
    timeout: float = 10.0  # per connect and per read, as img2dataset's --timeout
    total_timeout: float = 60.0  # the whole request, body included
    retries: int = 2
    backoff_s: float = 0.5  # first backoff; doubles per retry, with jitter
    max_retry_after_s: float = 30.0  # a longer Retry-After gives up with reason rate_limited
    max_bytes: int = 32 * 1024 * 1024
    max_redirects: int = 5
    user_agent: str = DEFAULT_USER_AGENT
    user_agent_token: str = "winnow"  # X-Robots-Tag lines addressed to this token apply to us
    disallowed_header_directives: tuple[str, ...] = DISALLOWED_DIRECTIVES
    per_domain_concurrency: int = 8
    allow_networks: tuple[str, ...] = ()  # CIDRs exempt from the address guard, e.g. ("127.0.0.0/8",)
    ignore_ssl_certificate: bool = False  # img2dataset's option: do not verify TLS certificates
    respect_robots_txt: bool = False  # off, as in img2dataset; its users asked for it (img2dataset#48)
    proxies: ProxySettings | None = None  # None: no proxy


@dataclass(frozen=True)
class ProxySettings:
    """The proxies of ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY``, read once by the caller."""

    http: str = ""
    https: str = ""
    no_proxy: str = ""

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> ProxySettings | None:
        env = os.environ if environ is None else environ
        found = {name: env.get(name.upper()) or env.get(name.lower()) or "" for name in ("http_proxy", "https_proxy",
                                                                                        "no_proxy")}
        if not found["http_proxy"] and not found["https_proxy"]:
            return None
        return cls(found["http_proxy"], found["https_proxy"], found["no_proxy"])

    def proxy_for(self, scheme: str, host: str) -> str | None:
        proxy = self.https if scheme == "https" else self.http
        if not proxy:
            return None
        if self.no_proxy and urllib.request.proxy_bypass_environment(host, {"no": self.no_proxy}):
            return None
        return proxy


def opted_out(header_values: list[str], token: str, disallowed: tuple[str, ...]) -> str | None:
    """The opt-out directive that applies to us in these ``X-Robots-Tag`` values, if any."""
    for value in header_values:
        head, sep, tail = value.partition(":")
        directives_text, agent = (tail, head.strip().lower()) if sep and head.strip().lower() not in disallowed else (value, None)
        if agent is not None and agent != token.lower():
            continue
        for directive in directives_text.split(","):
            directive = directive.strip().lower()
            if directive in disallowed:
                return directive
    return None


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _refusals_before_connect(policy: AddressPolicy, host: str, port: int) -> list[str]:
    """Why each address of ``host`` is refused, when all of them are; empty when any is allowed."""
    if _is_ip_literal(host):
        addresses = [host]
    else:
        try:
            addresses = sorted({info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})
        except (socket.gaierror, UnicodeError):
            return []  # let the connection report the resolution error
    refusals = [policy.refusal(address) for address in addresses]
    return refusals if refusals and all(refusals) else []


def _guarded_pool_classes(policy: AddressPolicy) -> dict[str, type]:
    """Connection pools whose sockets are checked against ``policy`` before any byte is sent."""

    def guarded(base: type) -> type:
        class GuardedConnection(base):
            def _new_conn(self):
                # Refuse before connecting when every address the name resolves to is refused
                # (an unroutable address would only time out); the peer check below still
                # guards against a resolver that answers differently the second time.
                refusals = _refusals_before_connect(policy, self._dns_host.strip("[]"), self.port)
                if refusals:
                    raise BlockedAddressError(f"refused to connect to {self.host}: {refusals[0]}")
                sock = super()._new_conn()
                peer = sock.getpeername()[0]
                reason = policy.refusal(peer)
                if reason is not None:
                    sock.close()
                    raise BlockedAddressError(f"refused to connect to {self.host}: {reason}")
                return sock

        return GuardedConnection

    class GuardedHTTPPool(HTTPConnectionPool):
        ConnectionCls = guarded(HTTPConnection)

    class GuardedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = guarded(HTTPSConnection)

    return {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}


def _caused_by(exc: BaseException, kind: type) -> BaseException | None:
    """The first exception of ``kind`` in ``exc``'s chain (urllib3 wraps errors in args and causes)."""
    seen, pending = set(), [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return current
        pending.extend([current.__cause__, current.__context__, getattr(current, "reason", None),
                        *[a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]])
    return None


class HttpFetcher:
    """Thread-safe; share one per process."""

    def __init__(self, options: FetchOptions | None = None) -> None:
        self.options = options or FetchOptions()
        self.policy = AddressPolicy.from_strings(self.options.allow_networks)
        tls = {"cert_reqs": "CERT_NONE"} if self.options.ignore_ssl_certificate else {}
        self._pool_kwargs = dict(num_pools=256, maxsize=self.options.per_domain_concurrency, block=False,
                                 retries=False, **tls)
        self._pool = urllib3.PoolManager(**self._pool_kwargs)
        self._pool.pool_classes_by_scheme = _guarded_pool_classes(self.policy)
        self._proxy_pools: dict[str, urllib3.ProxyManager] = {}
        self._domain_slots: dict[str, threading.BoundedSemaphore] = {}
        self._slots_lock = threading.Lock()
        self._robots: dict[str, object] = {}
        self._robots_lock = threading.Lock()

    def _slot(self, host: str) -> threading.BoundedSemaphore:
        with self._slots_lock:
            slot = self._domain_slots.get(host)
            if slot is None:
                slot = self._domain_slots[host] = threading.BoundedSemaphore(self.options.per_domain_concurrency)
            return slot

    def fetch(self, url: str) -> bytes:
        """The body of ``url`` after redirects; raises FetchError with a reason."""
        attempt = 0
        while True:
            try:
                return self._fetch_once(url)
            except FetchError as error:
                if not error.retryable or attempt >= self.options.retries:
                    raise
                if error.retry_after is not None and error.retry_after > self.options.max_retry_after_s:
                    raise FetchError("rate_limited", f"Retry-After of {error.retry_after:.0f}s is over the "
                                     f"{self.options.max_retry_after_s:.0f}s cap: {error}") from error
                backoff = self.options.backoff_s * (2 ** attempt) * (0.5 + random.random())
                time.sleep(max(backoff, error.retry_after or 0.0))
                attempt += 1

    def _fetch_once(self, url: str) -> bytes:
        deadline = time.monotonic() + self.options.total_timeout
        for _ in range(self.options.max_redirects + 1):
            try:
                parts = urlsplit(url)
                host = parts.hostname
            except ValueError as exc:  # e.g. an unclosed "[" of an IPv6 host
                raise FetchError("invalid_url", f"invalid URL {url!r}: {exc}") from exc
            if parts.scheme not in ("http", "https"):
                raise FetchError("unsupported_scheme", f"only http and https URLs are fetched, not {parts.scheme!r}")
            if not host:
                raise FetchError("invalid_url", f"URL has no host: {url!r}")
            if self.options.respect_robots_txt and not self._robots_allow(url, parts, deadline):
                raise FetchError("robots_disallowed", f"robots.txt of {host} disallows {url}")
            slot = self._slot(host)
            queued = time.monotonic()
            with slot:
                # Waiting behind this host's other requests is not this request's time: a stalled
                # neighbour must not time out a healthy request queued behind it.
                deadline += time.monotonic() - queued
                location, body = self._request(url, deadline)
            if location is None:
                return body
            try:
                url = urljoin(url, location)
            except ValueError as exc:
                raise FetchError("invalid_url", f"invalid redirect target {location!r}: {exc}") from exc
        raise FetchError("too_many_redirects", f"more than {self.options.max_redirects} redirects")

    def _request(self, url: str, deadline: float) -> tuple[str | None, bytes]:
        """One HTTP exchange: ``(redirect target, b"")`` or ``(None, body)``."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError("timeout", "total time cap reached", retryable=True)
        timeout = urllib3.Timeout(connect=min(self.options.timeout, remaining), read=min(self.options.timeout, remaining))
        try:
            pool = self._pool_for(url)
            response = pool.request("GET", url, headers={"User-Agent": self.options.user_agent},
                                    preload_content=False, redirect=False, retries=False, timeout=timeout)
        except BlockedAddressError as exc:
            raise FetchError("blocked_address", str(exc)) from exc
        except (LocationParseError, ValueError) as exc:
            raise FetchError("invalid_url", f"invalid URL {url!r}: {exc}") from exc
        except HTTPError as exc:
            raise self._network_error(exc) from exc
        try:
            return self._read_response(response, deadline)
        finally:
            response.release_conn()

    def _pool_for(self, url: str):
        """The guarded pool, or a proxy's pool once the target's resolved addresses pass the guard."""
        proxies = self.options.proxies
        parts = urlsplit(url)
        proxy = proxies.proxy_for(parts.scheme, parts.hostname) if proxies is not None else None
        if proxy is None:
            return self._pool
        # The socket's peer is the proxy, so the target is judged by name resolution here.
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = ([parts.hostname] if _is_ip_literal(parts.hostname) else
                         sorted({i[4][0] for i in socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)}))
        except (socket.gaierror, UnicodeError) as exc:
            raise FetchError("dns_error", f"name resolution failed for {parts.hostname}: {exc}") from exc
        for address in addresses:
            reason = self.policy.refusal(address)
            if reason is not None:
                raise BlockedAddressError(f"refused to send {parts.hostname} to the proxy: {reason}")
        with self._slots_lock:
            manager = self._proxy_pools.get(proxy)
            if manager is None:
                manager = self._proxy_pools[proxy] = urllib3.ProxyManager(proxy, **self._pool_kwargs)
            return manager

    def _robots_allow(self, url: str, parts, deadline: float) -> bool:
        """Whether the host's robots.txt lets our token fetch ``url`` (read once per host, then cached)."""
        from protego import Protego  # only when asked for

        origin = f"{parts.scheme}://{parts.netloc}"
        with self._robots_lock:
            rules = self._robots.get(origin)
        if rules is None:
            text = ""
            try:
                with self._slot(parts.hostname):
                    location, body = self._request(f"{origin}/robots.txt", deadline)
                if location is None:
                    text = body[:ROBOTS_MAX_BYTES].decode("utf-8", errors="replace")
            except FetchError:
                text = ""  # no readable robots.txt: everything is allowed, as crawlers read it
            rules = Protego.parse(text)
            with self._robots_lock:
                self._robots[origin] = rules
        return rules.can_fetch(url, self.options.user_agent_token)

    def _read_response(self, response, deadline: float) -> tuple[str | None, bytes]:
        status = response.status
        if status in REDIRECT_CODES:
            location = response.headers.get("Location")
            response.drain_conn()
            if not location:
                raise FetchError(f"http_{status}", f"redirect {status} without a Location header")
            return location, b""
        if status != 200:
            retry_after = _parse_retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None
            response.drain_conn()
            raise FetchError(f"http_{status}", f"HTTP {status}", retryable=status in RETRY_CODES,
                             retry_after=retry_after)
        directive = opted_out(response.headers.getlist("X-Robots-Tag"), self.options.user_agent_token,
                              self.options.disallowed_header_directives)
        if directive is not None:
            response.close()
            raise FetchError("opt_out", f"X-Robots-Tag: {directive}")
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.options.max_bytes:
            response.close()
            raise FetchError("too_large", f"declared size {int(declared)} bytes is over the cap of {self.options.max_bytes}")
        chunks, size = [], 0
        try:
            # read1 returns what one socket read brings, so a trickling body meets the deadline
            # check within one read timeout (stream() would wait for whole 256 KiB chunks).
            while chunk := response.read1(256 * 1024):
                size += len(chunk)
                if size > self.options.max_bytes:
                    response.close()
                    raise FetchError("too_large", f"body is over the cap of {self.options.max_bytes} bytes")
                if time.monotonic() > deadline:
                    response.close()
                    raise FetchError("timeout", f"body not received within {self.options.total_timeout}s",
                                     retryable=True)
                chunks.append(chunk)
        except HTTPError as exc:
            raise self._network_error(exc) from exc
        return None, b"".join(chunks)

    @staticmethod
    def _network_error(exc: Exception) -> FetchError:
        blocked = _caused_by(exc, BlockedAddressError)
        if blocked is not None:
            return FetchError("blocked_address", str(blocked))
        if _caused_by(exc, NameResolutionError) is not None:
            return FetchError("dns_error", f"name resolution failed: {exc}")
        if _caused_by(exc, SSLError) is not None:
            return FetchError("ssl_error", f"TLS failed: {exc}")
        # Before timeouts: urllib3's NewConnectionError subclasses its ConnectTimeoutError.
        if _caused_by(exc, ConnectionRefusedError) is not None or "connection refused" in str(exc).lower():
            return FetchError("connection_refused", f"connection refused: {exc}")
        if _caused_by(exc, TimeoutError) is not None or "timed out" in str(exc).lower():
            return FetchError("timeout", f"timed out: {exc}", retryable=True)
        if _caused_by(exc, IncompleteRead) is not None or _caused_by(exc, http.client.IncompleteRead) is not None:
            return FetchError("truncated", f"connection closed before the declared length: {exc}", retryable=True)
        return FetchError("connection_error", f"{type(exc).__name__}: {exc}", retryable=True)

    def close(self) -> None:
        self._pool.clear()
        for manager in self._proxy_pools.values():
            manager.clear()
