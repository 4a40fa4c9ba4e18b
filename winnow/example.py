"""The built-in example pool: real images served from a loopback web server, for ``winnow run --example``.

The images ship inside the scikit-image wheel (photos) and, where Debian's ``openclipart-png``
is installed, its clip art with titles as captions. A few rows fail on purpose (a missing
file, a file that is not an image, a cloud metadata address) so the summary shows reasons.
"""

from __future__ import annotations

import functools
import re
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

OPENCLIPART_DIR = Path("/usr/share/openclipart/png")
SKIMAGE_PHOTOS = {
    "astronaut.png": "an astronaut in a white spacesuit in front of an American flag",
    "coffee.png": "a cup of coffee on a saucer",
    "chelsea.png": "a tabby cat looking to the side",
    "rocket.jpg": "a rocket on its launch pad",
    "motorcycle_left.png": "a red motorcycle in a garage",
    "hubble_deep_field.jpg": "galaxies in the Hubble deep field",
    "retina.jpg": "a photograph of a human retina",
    "camera.png": "a man with a camera on a tripod, black and white",
    "coins.png": "old coins on a dark background",
    "horse.png": "the silhouette of a horse",
    "immunohistochemistry.png": "a stained tissue sample under a microscope",
}


def _openclipart_sample(limit: int) -> list[Path]:
    if not OPENCLIPART_DIR.is_dir():
        return []
    files = sorted(OPENCLIPART_DIR.rglob("*.png"))
    step = max(1, len(files) // max(limit, 1))
    return [f for f in files[::step] if f.stat().st_size < 2_000_000][:limit]


def _title(path: Path) -> str:
    words = re.sub(r"[_\-]+", " ", path.stem)
    return re.sub(r"\s+\d+$", "", words).strip() or path.stem


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


class ExampleServer:
    """Serves a directory on 127.0.0.1 (a free port) from a background thread."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="example-server", daemon=True)

    def __enter__(self) -> ExampleServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def build_example_pool(workdir: Path, base_url: str, clipart: int = 120) -> Path:
    """Copy the example images into ``workdir/www`` and write ``workdir/pool.parquet``."""
    import skimage

    www = workdir / "www"
    www.mkdir(parents=True, exist_ok=True)
    rows = []
    skimage_dir = Path(skimage.__file__).parent / "data"
    for name, caption in SKIMAGE_PHOTOS.items():
        if (skimage_dir / name).exists():
            shutil.copyfile(skimage_dir / name, www / name)
            rows.append((f"{base_url}/{name}", caption))
    for index, path in enumerate(_openclipart_sample(clipart)):
        name = f"clipart_{index:04d}.png"
        shutil.copyfile(path, www / name)
        rows.append((f"{base_url}/{name}", _title(path)))
    (www / "not_an_image.jpg").write_text("<html>this is a web page, not an image</html>")
    rows += [
        (f"{base_url}/not_an_image.jpg", "a page that claims to be an image"),
        (f"{base_url}/missing.jpg", "a file that is not there"),
        ("http://169.254.169.254/latest/meta-data/", "the cloud metadata service, refused"),
    ]
    pool = workdir / "pool.parquet"
    pq.write_table(pa.table({"url": [u for u, _ in rows], "text": [t for _, t in rows]}), pool)
    return pool
