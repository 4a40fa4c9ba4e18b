"""A local HTTP server in the Hugging Face hub's layout, serving dataset repositories from folders.

It STANDS IN for huggingface.co, which cannot be reached from the test machines: the real
``huggingface_hub`` client (``snapshot_download``) talks to it through ``HF_ENDPOINT`` exactly as
it talks to the hub, over the routes that client uses:

=====================================================  ===============================================
``GET /api/datasets/<owner>/<name>/revision/<rev>``    the repo's info: ``id``, ``sha``, ``siblings``
``GET /api/datasets/<owner>/<name>/tree/<rev>``        its files (``type``, ``path``, ``size``, ``oid``),
                                                       recursive; one page
``HEAD|GET /datasets/<owner>/<name>/resolve/<rev>/<path>``  the file, with ``X-Repo-Commit``, ``ETag``,
                                                       ``Content-Length``; ``Range`` gives 206
=====================================================  ===============================================

``HubServer(root)``: ``root/<owner>/<name>/`` is a dataset repository. ``server.gets`` counts the
GETs of each file (by repo path); ``server.fail_next[path] = n`` answers the next ``n`` GETs of a
file with its headers and only half its bytes, then closes the connection (an interrupted download).
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    def do_GET(self):
        self._dispatch(head=False)

    def do_HEAD(self):
        self._dispatch(head=True)

    def _json(self, payload) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _missing(self) -> None:
        body = b'{"error": "Repository Not Found"}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _dispatch(self, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        hub: HubServer = self.server.hub
        if match := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/revision/([^/]+)", path):
            repo = hub.repo(match.group(1))
            if repo is None:
                return self._missing()
            return self._json({"id": match.group(1), "sha": COMMIT, "private": False,
                               "siblings": [{"rfilename": name} for name in hub.files(repo)]})
        if match := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", path):
            repo = hub.repo(match.group(1))
            if repo is None:
                return self._missing()
            return self._json([{"type": "file", "path": name, "size": (repo / name).stat().st_size,
                                "oid": hub.oid(repo / name)} for name in hub.files(repo)])
        if match := re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            repo = hub.repo(match.group(1))
            if repo is None or not (repo / match.group(3)).is_file():
                return self._missing()
            return self._file(repo, match.group(3), head)
        self._missing()

    def _file(self, repo: Path, name: str, head: bool) -> None:
        hub: HubServer = self.server.hub
        data = (repo / name).read_bytes()
        start = 0
        if (wanted := self.headers.get("Range")) and (match := re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())):
            start = int(match.group(1))
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", f'"{hub.oid(repo / name)}"')
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Accept-Ranges", "bytes")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if head:
            return
        with hub.lock:
            hub.gets[name] += 1
            hub.ranges[name].append(start)
            failing = hub.fail_next.get(name, 0) > 0
            if failing:
                hub.fail_next[name] -= 1
        if failing:
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: "HubServer"


class HubServer:
    """``with HubServer(root) as hub: os.environ["HF_ENDPOINT"] = hub.endpoint``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.gets: collections.Counter[str] = collections.Counter()
        self.ranges: dict[str, list[int]] = collections.defaultdict(list)
        self.fail_next: dict[str, int] = {}
        self.lock = threading.Lock()
        self._server: _Server | None = None

    def repo(self, repo_id: str) -> Path | None:
        folder = self.root / repo_id
        return folder if folder.is_dir() else None

    @staticmethod
    def files(repo: Path) -> list[str]:
        return sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file())

    @staticmethod
    def oid(path: Path) -> str:
        return hashlib.sha1(path.read_bytes()).hexdigest()

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "HubServer":
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hub = self
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
