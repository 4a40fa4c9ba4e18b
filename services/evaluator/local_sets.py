"""winnow's offline evaluation sets, written in DataComp's (clip_benchmark's) webdataset layout.

Two real sets that need no internet, both from Debian packages:

* ``wds_fashion_mnist_test``: zero-shot classification, 10 named classes, from the test split of
  ``dataset-fashion-mnist`` (the first ``size / 10`` images of each class in file order), 28 x 28
  grayscale PNGs, with clip_benchmark-style templates;
* ``wds_openclipart_retrieval_test``: image-text retrieval on clip art from ``openclipart-png``,
  captions made from the file titles (two lines per image: the title, and "clip art of" it).

The retrieval images are held out from training by a deterministic rule on the file path, which a
trainer's data builder must apply too (:func:`is_eval_holdout`)::

    bucket = int.from_bytes(sha256(b"winnow-eval-holdout:" + rel).digest()[:8], "big") % 10
    held out  <=>  bucket == 0          (about 1 file in 10)

where ``rel`` is the UTF-8 path relative to ``/usr/share/openclipart/png`` with ``/`` separators,
e.g. ``animals/cat_01.png``. From the held-out files the set then drops any whose bytes also occur
in a file that is not held out (openclipart has exact copies under several names), so excluding
held-out paths from training is enough to keep train and evaluation disjoint; it also keeps one
image per title, so that every caption names one image. ``sources.txt`` in the set lists the files
it used.

The Fashion-MNIST set comes from the *test* split only; a trainer that uses Fashion-MNIST must take
its train split (``train-images-idx3-ubyte.gz``) and nothing else.

Each set is written under a temporary name and moved into place; ``test/nshards.txt``, which the
evaluator takes as "the data is here", is written last.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
OPENCLIPART_DIR = Path("/usr/share/openclipart/png")

FASHION_MNIST_KEY, OPENCLIPART_KEY = "fashion_mnist", "openclipart_retrieval"
FASHION_MNIST_DIRNAME, OPENCLIPART_DIRNAME = "wds_fashion_mnist_test", "wds_openclipart_retrieval_test"

# Fashion-MNIST's labels 0-9 (T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker,
# Bag, Ankle boot), as a caption would say them.
FASHION_MNIST_CLASSNAMES = ("t-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                            "bag", "ankle boot")
FASHION_MNIST_TEMPLATES = (
    "a photo of a {c}.",
    "a black and white photo of a {c}.",
    "a low resolution photo of a {c}.",
    "a photo of the {c}.",
    "a product photo of a {c}.",
    "a photo of a {c}, a type of clothing.",
)

HOLDOUT_SALT = b"winnow-eval-holdout:"
HOLDOUT_BUCKETS = 10
# Clip art that is mostly patterns and gradients makes no sense as a caption target.
_SKIP_DIRS = ("special/",)
_NOISE_WORDS = {"md", "sm", "lg", "thumb", "small", "big", "png", "svg", "clipart", "openclipart"}
_MAX_PIXELS = 16_000_000
_THUMB_SIDE = 256


@dataclass(frozen=True)
class BuiltSet:
    key: str
    folder: Path
    samples: int
    shards: int


# --- the hold-out rule --------------------------------------------------------------------------------


def openclipart_relative(path: str | Path) -> str:
    """The path the hold-out rule hashes: relative to the openclipart root, ``/``-separated."""
    path = Path(path)
    try:
        return path.relative_to(OPENCLIPART_DIR).as_posix()
    except ValueError:
        return path.as_posix()


def holdout_bucket(path: str | Path) -> int:
    digest = hashlib.sha256(HOLDOUT_SALT + openclipart_relative(path).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % HOLDOUT_BUCKETS


def is_eval_holdout(path: str | Path) -> bool:
    """Whether an openclipart file is reserved for evaluation; a trainer must not use it."""
    return holdout_bucket(path) == 0


def clipart_title(path: str | Path) -> str:
    """A caption from a clip-art file name: ``red_apple_01.png`` -> ``red apple``."""
    stem = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", Path(path).stem)
    words = [w.lower() for w in re.split(r"[\s_\-.+,()\[\]]+", stem) if w]
    words = [w for w in words if not w.isdigit() and w not in _NOISE_WORDS]
    if words:
        words[-1] = re.sub(r"\d+$", "", words[-1])
    return " ".join(w for w in words if w)


# --- writing a set ------------------------------------------------------------------------------------


def write_wds_set(folder: str | Path, samples: Iterable[dict], *, classnames: Iterable[str] | None = None,
                  templates: Iterable[str] | None = None, dataset_type: str | None = None,
                  samples_per_shard: int = 500, manifest: dict | None = None,
                  extra_files: dict[str, str] | None = None) -> BuiltSet:
    """Write ``samples`` (``__key__`` plus bytes per member) as ``folder/test/{0..N-1}.tar`` and the metadata.

    The set is built beside ``folder`` and moved into place when complete, with ``nshards.txt``
    written last, so a reader never sees half a set.
    """
    import webdataset as wds

    folder = Path(folder)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "test").mkdir(parents=True)
    shards = count = 0
    writer = None
    try:
        for sample in samples:
            if count % samples_per_shard == 0:
                if writer is not None:
                    writer.close()
                writer = wds.TarWriter(str(partial / "test" / f"{shards}.tar"), encoder=False)
                shards += 1
            writer.write(sample)
            count += 1
    finally:
        if writer is not None:
            writer.close()
    if count == 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise ValueError(f"{folder.name}: no samples to write")
    if classnames is not None:
        (partial / "classnames.txt").write_text("\n".join(classnames) + "\n", encoding="utf-8")
    if templates is not None:
        (partial / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n", encoding="utf-8")
    if dataset_type is not None:
        (partial / "dataset_type.txt").write_text(dataset_type + "\n", encoding="utf-8")
    for name, text in (extra_files or {}).items():
        (partial / name).write_text(text, encoding="utf-8")
    (partial / "manifest.json").write_text(json.dumps({**(manifest or {}), "samples": count, "shards": shards},
                                                      indent=2) + "\n", encoding="utf-8")
    (partial / "test" / "nshards.txt").write_text(f"{shards}\n")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return BuiltSet(key=folder.name, folder=folder, samples=count, shards=shards)


def _png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


# --- Fashion-MNIST -----------------------------------------------------------------------------------


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (MNIST's format), gzipped or not, as a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {body.size} bytes for shape {shape}")
    return body.reshape(shape)


def fashion_mnist_samples(size: int, source: Path = FASHION_MNIST_DIR) -> Iterator[dict]:
    """The first ``size / 10`` test images of each class (the remainder to the first classes), in file order."""
    images = read_idx(source / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(source / "t10k-labels-idx1-ubyte.gz")
    classes = len(FASHION_MNIST_CLASSNAMES)
    quota = [size // classes + (1 if c < size % classes else 0) for c in range(classes)]
    taken = [0] * classes
    for index, label in enumerate(labels.tolist()):
        if taken[label] < quota[label]:
            taken[label] += 1
            yield {"__key__": f"fmnist_{index:05d}", "png": _png_bytes(images[index]), "cls": str(label).encode()}
        if taken == quota:
            return
    raise ValueError(f"Fashion-MNIST's test split has fewer than {size} images in the per-class quota")


def build_fashion_mnist(out: str | Path, size: int = 1000, samples_per_shard: int = 500,
                        source: Path = FASHION_MNIST_DIR) -> BuiltSet:
    if not (source / "t10k-images-idx3-ubyte.gz").is_file():
        raise FileNotFoundError(f"Fashion-MNIST is not at {source} (Debian package dataset-fashion-mnist)")
    built = write_wds_set(Path(out) / FASHION_MNIST_DIRNAME, fashion_mnist_samples(size, source),
                          classnames=FASHION_MNIST_CLASSNAMES, templates=FASHION_MNIST_TEMPLATES,
                          samples_per_shard=samples_per_shard,
                          manifest={"task": FASHION_MNIST_KEY, "source": str(source),
                                    "selection": "first size/10 test images of each class, in file order"})
    return BuiltSet(FASHION_MNIST_KEY, built.folder, built.samples, built.shards)


# --- openclipart retrieval -----------------------------------------------------------------------------


def _file_digest(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()


def _clipart_jpeg(path: Path) -> bytes | None:
    """The clip art composited on white and shrunk to at most 256 px, as JPEG; None if unusable."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > _MAX_PIXELS or min(image.size) < 32:
                    return None
                image.load()
                if image.mode == "P" and "transparency" in image.info:
                    image = image.convert("RGBA")
                if image.mode in ("RGBA", "LA", "PA"):
                    rgba = image.convert("RGBA")
                    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    background.alpha_composite(rgba)
                    image = background
                image = image.convert("RGB")
                image.thumbnail((_THUMB_SIDE, _THUMB_SIDE), Image.Resampling.LANCZOS)
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=90)
                return buffer.getvalue()
    except Exception:  # PIL raises many types for broken files; such a file is simply not used
        return None


def openclipart_retrieval_samples(size: int, source: Path = OPENCLIPART_DIR) -> tuple[list[dict], list[str]]:
    """Held-out clip art with unique titles and no exact copy on the training side; and their paths."""
    files = sorted(source.rglob("*.png"), key=lambda p: p.as_posix())
    held, training_digests = [], set()
    for path in files:
        if is_eval_holdout(path.relative_to(source)):
            held.append(path)
        else:
            training_digests.add(_file_digest(path))
    # a hash order mixes the categories; it is fixed for a given file list
    held.sort(key=lambda p: hashlib.sha256(HOLDOUT_SALT + p.relative_to(source).as_posix().encode()).digest())
    samples, used, titles, digests = [], [], set(), set()
    for path in held:
        relative = path.relative_to(source).as_posix()
        title = clipart_title(path)
        if len(samples) >= size:
            break
        if relative.startswith(_SKIP_DIRS) or not re.search(r"[a-z]{3}", title) or title in titles:
            continue
        digest = _file_digest(path)
        if digest in training_digests or digest in digests:
            continue
        jpeg = _clipart_jpeg(path)
        if jpeg is None:
            continue
        titles.add(title)
        digests.add(digest)
        used.append(relative)
        samples.append({"__key__": f"clipart_{len(samples):05d}", "jpg": jpeg,
                        "txt": f"{title}\nclip art of {title}".encode("utf-8")})
    return samples, used


def build_openclipart_retrieval(out: str | Path, size: int = 500, samples_per_shard: int = 500,
                                source: Path = OPENCLIPART_DIR) -> BuiltSet:
    if not source.is_dir():
        raise FileNotFoundError(f"openclipart is not at {source} (Debian package openclipart-png)")
    samples, used = openclipart_retrieval_samples(size, source)
    built = write_wds_set(Path(out) / OPENCLIPART_DIRNAME, samples, dataset_type="retrieval",
                          samples_per_shard=samples_per_shard, extra_files={"sources.txt": "\n".join(used) + "\n"},
                          manifest={"task": OPENCLIPART_KEY, "source": str(source),
                                    "holdout_rule": "sha256(b'winnow-eval-holdout:' + path relative to the source, "
                                                    "'/'-separated)[:8] as a big-endian integer % 10 == 0",
                                    "selection": "held-out files in hash order; one per title; none whose bytes "
                                                 "occur in a file that is not held out", "requested": size})
    return BuiltSet(OPENCLIPART_KEY, built.folder, built.samples, built.shards)


def build_local_sets(out: str | Path, *, fashion_mnist_size: int = 1000, retrieval_size: int = 500,
                     samples_per_shard: int = 500, sets: Iterable[str] = (FASHION_MNIST_KEY, OPENCLIPART_KEY)
                     ) -> list[BuiltSet]:
    """Write the chosen local sets under ``out`` (an evaluation data root)."""
    builders = {
        FASHION_MNIST_KEY: lambda: build_fashion_mnist(out, fashion_mnist_size, samples_per_shard),
        OPENCLIPART_KEY: lambda: build_openclipart_retrieval(out, retrieval_size, samples_per_shard),
    }
    unknown = set(sets) - set(builders)
    if unknown:
        raise ValueError(f"unknown local sets {sorted(unknown)}; known: {sorted(builders)}")
    Path(out).mkdir(parents=True, exist_ok=True)
    return [builders[name]() for name in sets]
