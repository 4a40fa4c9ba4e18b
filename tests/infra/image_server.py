"""A local HTTP image server with failure routes, for downloader tests and benchmarks.

Usage::

    with ImageServer(corpus_dir) as srv:          # binds 127.0.0.1, random port
        url = srv.url("/img/00000_astronaut.jpg")   # == srv.base_url + path
        ...
        assert srv.hits["/img/00000_astronaut.jpg"] == 1

Routes (``<name>`` is a file name, relative to ``root_dir``):

=================================  ==============================================
``/img/<name>``                    the file; Content-Type from the extension,
                                   Content-Length; keep-alive (HTTP/1.1)
``/status/<code>``                 that status (200-599) with a short text body
                                   (``?retry_after=N`` adds Retry-After)
``/flaky429/<token>/<name>``       first request per token: 429 + Retry-After: 1,
                                   then the image (``?fail=N``: first N fail)
``/flaky503/<token>/<name>``       same with 503
``/slow/<seconds>/<name>``         sleeps <seconds> (float) before the headers
``/trickle/<name>``                headers at once, then body in 4 KiB chunks
                                   with 0.2 s pauses (``?chunk=B&delay=S``)
``/truncated/<name>``              full Content-Length, only the first half of
                                   the bytes, then the connection is closed
``/truncated-image/<name>``        valid HTTP, body = first 60 % of the file
``/notimage``                      200, Content-Type image/jpeg, HTML body
``/huge-declared``                 200, image/jpeg, Content-Length 10_000_000_000,
                                   then 4 KiB slowly (4 x 1 KiB / 0.25 s), close
``/bomb.png``                      30000x30000 1-bit grayscale PNG (~110 KB)
``/gzip-bomb``                     200, image/png, ``Content-Encoding: gzip``:
                                   ~1 MB that inflates to 1 GiB of zeros
``/loop/<a|b>``                    302 to the other one: a redirect loop
``/optout/<directive>/<name>``     the image + ``X-Robots-Tag: <directive>``
                                   (directive is URL-decoded)
``/redirect?to=<url>``             302 to the (URL-decoded) target
``/redirect-chain/<n>/<name>``     n successive 302s, then the image
``/mislabeled/<name>``             PNG bytes served as image/jpeg (non-PNG
                                   sources are re-encoded to PNG)
``/echo-ua``                       200 text/plain ``User-Agent: <ua>``
=================================  ==============================================

Unknown routes / files give 404. HEAD is supported on every route (same
status and headers, no body). ``server.hits`` counts requests per URL path
(percent-decoded, query string excluded); ``server.last_user_agent`` is the User-Agent of the
most recent request of any route.
"""

from __future__ import annotations

import collections
import io
import mimetypes
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
import zlib
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

_EXTRA_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
}

HUGE_DECLARED_LENGTH = 10_000_000_000
GZIP_BOMB_INFLATED = 1 << 30
BOMB_SIDE = 30000
NOT_IMAGE_BODY = (
    b"<!DOCTYPE html>\n<html><head><title>Not an image</title></head>\n"
    b"<body><h1>Sorry</h1><p>This is an HTML page served as image/jpeg.</p></body></html>\n"
)
_CONNECTION_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout)


def content_type_for(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix in _EXTRA_TYPES:
        return _EXTRA_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@lru_cache(maxsize=4)
def bomb_png_bytes(side: int = BOMB_SIDE) -> bytes:
    """A valid side x side 1-bit grayscale all-black PNG (tiny file, huge image).

    Built with zlib directly (PIL would need side*side bytes of RAM). For
    30000x30000 it is ~110 KB, 900 megapixels, ~112 MB of raw scanlines.
    """
    row = b"\x00" + b"\x00" * ((side + 7) // 8)  # filter type 0 + packed bits
    comp = zlib.compressobj(9)
    parts = []
    rows_per_block = 1000
    block = row * rows_per_block
    remaining = side
    while remaining:
        k = min(rows_per_block, remaining)
        parts.append(comp.compress(block if k == rows_per_block else row * k))
        remaining -= k
    parts.append(comp.flush())
    idat = b"".join(parts)
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


@lru_cache(maxsize=1)
def gzip_bomb_bytes(inflated: int = GZIP_BOMB_INFLATED) -> bytes:
    """Gzip members of 16 MiB of zeros each (about 1000:1), ``inflated`` bytes in all; a gzip
    stream may hold several members, and every decoder reads them one after the other."""
    import gzip

    member = gzip.compress(bytes(16 << 20), compresslevel=9, mtime=0)
    return member * (inflated // (16 << 20))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # default 5 drops connections under benchmark bursts

    owner: "ImageServer"

    def handle_error(self, request, client_address):  # pragma: no cover - diagnostics only
        exc = sys.exc_info()[1]
        if isinstance(exc, _CONNECTION_ERRORS) or isinstance(exc, OSError):
            return
        print(f"ImageServer: error handling request from {client_address}: {exc!r}", file=sys.stderr)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "winnow-test-images/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 60  # idle keep-alive connections are dropped after this

    server: _Server

    # -- plumbing -----------------------------------------------------------

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    def setup(self):
        super().setup()
        self.server.owner._register_conn(self.connection)

    def finish(self):
        try:
            super().finish()
        except _CONNECTION_ERRORS:
            pass
        finally:
            self.server.owner._unregister_conn(self.connection)

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except _CONNECTION_ERRORS:
            self.close_connection = True
        except OSError:
            self.close_connection = True

    def do_GET(self):
        self._dispatch(head=False)

    def do_HEAD(self):
        self._dispatch(head=True)

    def _send(self, code: int, body: bytes = b"", ctype: str = "text/plain; charset=utf-8",
              headers: dict | None = None, close: bool = False) -> None:
        """Complete response with Content-Length; headers+body in one write."""
        self.send_response(code)
        no_body = code in (204, 304) or 100 <= code < 200
        if not no_body:
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        # end_headers() would flush; build the header bytes ourselves to send
        # headers and body in a single write (avoids Nagle/delayed-ACK stalls).
        self._headers_buffer.append(b"\r\n")
        data = b"".join(self._headers_buffer)
        self._headers_buffer = []
        if not self._head and not no_body:
            data += body
        self.wfile.write(data)

    def _text(self, code: int, text: str, **kw) -> None:
        self._send(code, text.encode("utf-8"), **kw)

    def _not_found(self, what: str = "") -> None:
        self._text(404, f"404 Not Found {what}\n")

    def _image(self, name: str, headers: dict | None = None, ctype: str | None = None) -> None:
        data = self.server.owner._file(name)
        if data is None:
            return self._not_found(name)
        self._send(200, data, ctype or content_type_for(name), headers)

    # -- routing ------------------------------------------------------------

    def _dispatch(self, head: bool) -> None:
        self._head = head
        owner = self.server.owner
        parts = urlsplit(self.path)
        path = parts.path
        query = parse_qs(parts.query)
        owner._record(unquote(path), self.headers.get("User-Agent"))
        segs = [unquote(s) for s in path.split("/")[1:]]
        route = segs[0] if segs else ""
        rest = segs[1:]
        try:
            handler = _ROUTES.get(route)
            if handler is None:
                return self._not_found(path)
            handler(self, rest, query)
        except _CONNECTION_ERRORS:
            self.close_connection = True

    # -- routes ---------------------------------------------------------------

    def r_img(self, rest, q):
        self._image("/".join(rest))

    def r_status(self, rest, q):
        try:
            code = int(rest[0])
            if not 200 <= code <= 599:
                raise ValueError
        except (IndexError, ValueError):
            return self._text(400, "bad status code\n")
        headers = {}
        if "retry_after" in q:
            headers["Retry-After"] = q["retry_after"][0]
        if 300 <= code < 400 and "location" in q:
            headers["Location"] = q["location"][0]
        phrase = self.responses.get(code, ("",))[0]
        self._text(code, f"{code} {phrase}\n", headers=headers)

    def _flaky(self, code, rest, q):
        if len(rest) < 2:
            return self._not_found()
        token, name = rest[0], "/".join(rest[1:])
        fail = int(q.get("fail", ["1"])[0])
        n = self.server.owner._bump_token(f"{code}:{token}")
        if n <= fail:
            phrase = self.responses.get(code, ("",))[0]
            return self._text(code, f"{code} {phrase}\n", headers={"Retry-After": "1"})
        self._image(name)

    def r_flaky429(self, rest, q):
        self._flaky(429, rest, q)

    def r_flaky503(self, rest, q):
        self._flaky(503, rest, q)

    def r_slow(self, rest, q):
        try:
            secs = float(rest[0])
        except (IndexError, ValueError):
            return self._text(400, "bad delay\n")
        time.sleep(max(0.0, secs))
        self._image("/".join(rest[1:]))

    def r_trickle(self, rest, q):
        name = "/".join(rest)
        data = self.server.owner._file(name)
        if data is None:
            return self._not_found(name)
        chunk = max(1, int(q.get("chunk", ["4096"])[0]))
        delay = float(q.get("delay", ["0.2"])[0])
        self.send_response(200)
        self.send_header("Content-Type", content_type_for(name))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self._head:
            return
        for i in range(0, len(data), chunk):
            self.wfile.write(data[i:i + chunk])
            if i + chunk < len(data):
                time.sleep(delay)

    def r_truncated(self, rest, q):
        name = "/".join(rest)
        data = self.server.owner._file(name)
        if data is None:
            return self._not_found(name)
        self.send_response(200)
        self.send_header("Content-Type", content_type_for(name))
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if not self._head:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
        self._hard_close()

    def r_truncated_image(self, rest, q):
        name = "/".join(rest)
        data = self.server.owner._file(name)
        if data is None:
            return self._not_found(name)
        self._send(200, data[: int(len(data) * 0.6)], content_type_for(name))

    def r_notimage(self, rest, q):
        self._send(200, NOT_IMAGE_BODY, "image/jpeg")

    def r_huge_declared(self, rest, q):
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(HUGE_DECLARED_LENGTH))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if not self._head:
            prefix = self.server.owner._some_jpeg_prefix(4096)
            for i in range(0, len(prefix), 1024):
                self.wfile.write(prefix[i:i + 1024])
                time.sleep(0.25)
        self._hard_close()

    def r_bomb(self, rest, q):
        self._send(200, self.server.owner._bomb(), "image/png")

    def r_gzip_bomb(self, rest, q):
        self._send(200, gzip_bomb_bytes(), "image/png", headers={"Content-Encoding": "gzip"})

    def r_loop(self, rest, q):
        other = "b" if rest[:1] == ["a"] else "a"
        self._text(302, "round and round\n", headers={"Location": f"/loop/{other}"})

    def r_optout(self, rest, q):
        if len(rest) < 2:
            return self._not_found()
        directive, name = rest[0], "/".join(rest[1:])
        self._image(name, headers={"X-Robots-Tag": directive})

    def r_redirect(self, rest, q):
        target = q.get("to", [None])[0]
        if not target:
            return self._text(400, "missing ?to=\n")
        self._text(302, f"redirecting to {target}\n", headers={"Location": target})

    def r_redirect_chain(self, rest, q):
        try:
            n = int(rest[0])
        except (IndexError, ValueError):
            return self._text(400, "bad redirect count\n")
        name = "/".join(rest[1:])
        if n <= 0:
            return self._image(name)
        loc = f"{self.server.owner.base_url}/redirect-chain/{n - 1}/{quote(name)}"
        self._text(302, f"redirecting to {loc}\n", headers={"Location": loc})

    def r_mislabeled(self, rest, q):
        name = "/".join(rest)
        data = self.server.owner._png_of(name)
        if data is None:
            return self._not_found(name)
        self._send(200, data, "image/jpeg")

    def r_echo_ua(self, rest, q):
        self._text(200, f"User-Agent: {self.headers.get('User-Agent', '')}\n")

    def _hard_close(self):
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


_ROUTES = {
    "img": _Handler.r_img,
    "status": _Handler.r_status,
    "flaky429": _Handler.r_flaky429,
    "flaky503": _Handler.r_flaky503,
    "slow": _Handler.r_slow,
    "trickle": _Handler.r_trickle,
    "truncated": _Handler.r_truncated,
    "truncated-image": _Handler.r_truncated_image,
    "notimage": _Handler.r_notimage,
    "huge-declared": _Handler.r_huge_declared,
    "bomb.png": _Handler.r_bomb,
    "gzip-bomb": _Handler.r_gzip_bomb,
    "loop": _Handler.r_loop,
    "optout": _Handler.r_optout,
    "redirect": _Handler.r_redirect,
    "redirect-chain": _Handler.r_redirect_chain,
    "mislabeled": _Handler.r_mislabeled,
    "echo-ua": _Handler.r_echo_ua,
}


class ImageServer:
    """Threaded HTTP/1.1 server on 127.0.0.1 (a free port, or ``port``) serving ``root_dir``.

    Attributes:
        base_url: ``http://127.0.0.1:<port>`` once started (else ``None``).
        hits: ``collections.Counter`` of request counts per URL path.
        last_user_agent: User-Agent header of the latest request.
        tmp_dir: per-server temp dir (holds ``bomb.png``), removed on stop.
    """

    def __init__(self, root_dir: str | Path | None = None, host: str = "127.0.0.1", port: int = 0):
        self.root_dir = Path(root_dir).resolve() if root_dir is not None else None
        self.host = host
        self._wanted_port = port  # 0: any free one
        self.base_url: str | None = None
        self.port: int | None = None
        self.hits: collections.Counter = collections.Counter()
        self.last_user_agent: str | None = None
        self.tmp_dir: Path | None = None
        self._lock = threading.Lock()
        self._cache: dict[str, bytes] = {}
        self._png_cache: dict[str, bytes | None] = {}
        self._tokens: collections.Counter = collections.Counter()
        self._conns: set = set()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> str:
        if self._httpd is not None:
            return self.base_url  # type: ignore[return-value]
        self.tmp_dir = Path(tempfile.mkdtemp(prefix="winnow-imgsrv-"))
        httpd = _Server((self.host, self._wanted_port), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self.base_url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"ImageServer:{self.port}", daemon=True,
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:  # wake handler threads blocked on idle keep-alive sockets
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.tmp_dir is not None:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def __enter__(self) -> "ImageServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers for tests --------------------------------------------------------

    def url(self, path: str) -> str:
        """Absolute URL for a route path, e.g. ``srv.url('/img/a.jpg')``."""
        if self.base_url is None:
            raise RuntimeError("server not started")
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def img_url(self, name: str) -> str:
        return self.url("/img/" + quote(name))

    def names(self) -> list[str]:
        """Files under root_dir (relative posix paths), sorted."""
        if self.root_dir is None:
            return []
        return sorted(p.relative_to(self.root_dir).as_posix() for p in self.root_dir.rglob("*") if p.is_file())

    def preload(self) -> int:
        """Read every file of root_dir into the cache now; returns the count."""
        names = self.names()
        for n in names:
            self._file(n)
        return len(names)

    def reset_stats(self) -> None:
        with self._lock:
            self.hits.clear()
            self._tokens.clear()
            self.last_user_agent = None

    # -- internals used by the handler --------------------------------------------

    def _record(self, path: str, ua: str | None) -> None:
        with self._lock:
            self.hits[path] += 1
            self.last_user_agent = ua

    def _bump_token(self, key: str) -> int:
        with self._lock:
            self._tokens[key] += 1
            return self._tokens[key]

    def _register_conn(self, conn) -> None:
        with self._lock:
            self._conns.add(conn)

    def _unregister_conn(self, conn) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _file(self, name: str) -> bytes | None:
        """File bytes from root_dir (cached in memory), or None if absent/outside."""
        try:
            return self._cache[name]
        except KeyError:
            pass
        if self.root_dir is None or not name:
            return None
        p = (self.root_dir / name).resolve()
        if not (p.is_relative_to(self.root_dir) and p.is_file()):
            return None  # misses are not cached: files may be added later
        data = p.read_bytes()
        with self._lock:
            self._cache[name] = data
        return data

    def _png_of(self, name: str) -> bytes | None:
        if name in self._png_cache:
            return self._png_cache[name]
        data = self._file(name)
        if data is not None and not data.startswith(b"\x89PNG\r\n\x1a\n"):
            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:
                buf = io.BytesIO()
                im.save(buf, format="PNG")
                data = buf.getvalue()
        with self._lock:
            self._png_cache[name] = data
        return data

    def _some_jpeg_prefix(self, n: int) -> bytes:
        if self.root_dir is not None:
            for name in self.names():
                if name.lower().endswith((".jpg", ".jpeg")):
                    data = self._file(name)
                    if data:
                        return (data * (n // len(data) + 1))[:n]
        return (b"\xff\xd8\xff\xe0" + b"\x00" * n)[:n]

    def _bomb(self) -> bytes:
        key = "\0bomb.png"
        data = self._cache.get(key)
        if data is None:
            data = bomb_png_bytes()
            if self.tmp_dir is not None:
                (self.tmp_dir / "bomb.png").write_bytes(data)
            with self._lock:
                self._cache[key] = data
        return data
