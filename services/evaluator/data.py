"""Reading evaluation sets from disk: clip_benchmark's webdataset layout and Hugging Face arrow caches.

The webdataset layout (clip_benchmark ``build_wds_dataset``, what DataComp's
``download_evalsets.py`` fetches) is, for each task, a folder ``{data_root}/{task.wds_dir}``:

    test/nshards.txt                          the number of shards N (required)
    test/0.tar ... test/{N-1}.tar             samples: an image (webp, png, jpg or jpeg, the first
                                              present in that order) and
                                                cls  the class index, as text (classification), or
                                                txt  one caption per line (retrieval), and, for
                                                npy  WILDS and fairness sets, the sample's metadata
    classnames.txt                            one class name per line (classification)
    zeroshot_classification_templates.txt     one template per line, with ``{c}`` for the class
    dataset_type.txt                          optional: "retrieval" (else classification)

A task's data is present when ``test/nshards.txt`` exists. Retrieval and WinoGAViL, which DataComp
loads with Hugging Face ``datasets`` (``nlphuji/...``, cached under ``{data_root}/hf_cache``), are
also read from that cache's arrow files directly, without the ``datasets`` package.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np

IMAGE_EXTENSIONS = ("webp", "png", "jpg", "jpeg")
SPLIT = "test"
T = TypeVar("T")


class ImageTextEncoder(Protocol):
    """What the evaluator needs of a model: L2-normalised embeddings of RGB images and of texts."""

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray: ...

    def embed_texts(self, texts: list[str]) -> np.ndarray: ...


class EvalDataError(ValueError):
    """An evaluation set is present but malformed (missing member, bad label, unreadable image)."""


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def decode_image(data: bytes, key: str = "") -> np.ndarray:
    """Image bytes to an RGB uint8 array (what PIL gives clip_benchmark before the model's transform)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except Exception as exc:  # PIL raises many types for bad bytes
        raise EvalDataError(f"sample {key!r}: unreadable image ({exc})") from exc


class WdsEvalSet:
    """One evaluation set in clip_benchmark's webdataset layout."""

    def __init__(self, folder: str | Path, split: str = SPLIT) -> None:
        self.folder = Path(folder)
        self.split = split

    @property
    def nshards_path(self) -> Path:
        return self.folder / self.split / "nshards.txt"

    def exists(self) -> bool:
        return self.nshards_path.is_file()

    def _text(self, name: str) -> str | None:
        path = self.folder / name
        return path.read_text(encoding="utf-8") if path.is_file() else None

    @property
    def dataset_type(self) -> str:
        return (self._text("dataset_type.txt") or "classification").strip().lower()

    def classnames(self) -> list[str]:
        text = self._text("classnames.txt")
        if text is None:
            raise EvalDataError(f"{self.folder}: classnames.txt is missing")
        return [line.strip() for line in text.splitlines()]

    def templates(self) -> list[str]:
        text = self._text("zeroshot_classification_templates.txt")
        if text is None:
            raise EvalDataError(f"{self.folder}: zeroshot_classification_templates.txt is missing")
        return [line.strip() for line in text.splitlines()]

    def shard_paths(self) -> list[Path]:
        try:
            count = int(self.nshards_path.read_text().strip())
        except (OSError, ValueError) as exc:
            raise EvalDataError(f"{self.nshards_path}: not a shard count ({exc})") from exc
        paths = [self.folder / self.split / f"{index}.tar" for index in range(count)]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise EvalDataError(f"{self.folder / self.split}: nshards.txt says {count}, missing {missing[:5]}")
        return paths

    def raw_samples(self) -> Iterator[dict]:
        """Samples as webdataset groups them: ``__key__`` plus one bytes value per member extension."""
        import webdataset as wds

        urls = [str(p) for p in self.shard_paths()]
        yield from wds.WebDataset(urls, shardshuffle=False, nodesplitter=_every_shard)

    def classification_samples(self, with_metadata: bool = False,
                               with_label: bool = True) -> Iterator[tuple[np.ndarray, int, np.ndarray | None]]:
        """``(image, class index or -1, metadata or None)`` for each sample, in shard order."""
        for sample in self.raw_samples():
            key = sample.get("__key__", "")
            image = decode_image(_image_bytes(sample), key)
            label = -1
            if with_label:
                if "cls" not in sample:
                    raise EvalDataError(f"{self.folder}: sample {key!r} has no cls member")
                try:
                    label = int(sample["cls"].decode("ascii").strip())
                except ValueError as exc:
                    raise EvalDataError(f"{self.folder}: sample {key!r} has a cls that is not an integer") from exc
            metadata = None
            if with_metadata:
                if "npy" not in sample:
                    raise EvalDataError(f"{self.folder}: sample {key!r} has no npy metadata member")
                metadata = np.load(io.BytesIO(sample["npy"]), allow_pickle=False)
            yield image, label, metadata

    def retrieval_samples(self) -> Iterator[tuple[np.ndarray, list[str]]]:
        """``(image, captions)``: the ``txt`` member split into lines, as clip_benchmark does."""
        for sample in self.raw_samples():
            key = sample.get("__key__", "")
            if "txt" not in sample:
                raise EvalDataError(f"{self.folder}: sample {key!r} has no txt member")
            try:
                captions = sample["txt"].decode("utf-8").splitlines()
            except UnicodeDecodeError as exc:
                raise EvalDataError(f"{self.folder}: sample {key!r} has captions that are not UTF-8") from exc
            yield decode_image(_image_bytes(sample), key), captions


def _every_shard(urls):
    # clip_benchmark's node splitter: this process reads every shard.
    return urls


def _image_bytes(sample: dict) -> bytes:
    for extension in IMAGE_EXTENSIONS:
        if extension in sample:
            return sample[extension]
    raise EvalDataError(f"sample {sample.get('__key__', '')!r} has no image member ({', '.join(IMAGE_EXTENSIONS)})")


# --- Hugging Face datasets' arrow cache -----------------------------------------------------------------


def hf_arrow_files(data_root: str | Path, hf_dataset: str, split: str = SPLIT) -> list[Path]:
    """The cached arrow files of ``hf_dataset``'s split under ``{data_root}/hf_cache`` (``datasets`` layout).

    ``datasets`` caches ``{owner}___{name}/{config}/{version}/{hash}/{builder}-{split}[-NNNNN-of-NNNNN].arrow``;
    where several versions are cached, the most recently written folder is read.
    """
    owner, _, name = hf_dataset.partition("/")
    base = Path(data_root) / "hf_cache" / f"{owner}___{name}"
    if not base.is_dir():
        return []
    files = [p for p in base.rglob("*.arrow") if re.search(rf"-{re.escape(split)}(-\d+-of-\d+)?\.arrow$", p.name)]
    if not files:
        return []
    newest = max({p.parent for p in files}, key=lambda folder: folder.stat().st_mtime)
    return sorted(p for p in files if p.parent == newest)


def hf_rows(files: list[Path], columns: list[str]) -> Iterator[dict]:
    """Rows of the arrow files (``datasets`` writes the IPC stream format), only ``columns``."""
    import pyarrow as pa

    for path in files:
        with open(path, "rb") as handle:
            try:
                reader = pa.ipc.open_stream(handle)
            except pa.ArrowInvalid:
                handle.seek(0)
                reader = pa.ipc.open_file(handle)
                batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
            else:
                batches = iter(reader)
            for batch in batches:
                missing = set(columns) - set(batch.schema.names)
                if missing:
                    raise EvalDataError(f"{path}: columns {sorted(missing)} are missing")
                yield from batch.select(columns).to_pylist()


def hf_image(value, base: Path | None = None) -> np.ndarray:
    """A ``datasets`` Image cell (``{"bytes": ..., "path": ...}``) to an RGB array."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return decode_image(value["bytes"], value.get("path") or "")
        if value.get("path"):
            path = Path(value["path"])
            if not path.is_absolute() and base is not None:
                path = base / path
            return decode_image(path.read_bytes(), str(path))
    raise EvalDataError(f"not an image cell: {type(value).__name__}")


def export_images(data_root: str | Path, out: str | Path, wds_dirs: Iterable[str]) -> dict[str, int]:
    """Unpack the images of the webdataset sets under ``data_root`` into ``out/{wds_dir}/{key}.{ext}``.

    The result is a plain folder of evaluation images, e.g. for ``winnow dedup build-index``, which
    removes near-copies of evaluation images from a pool. Returns the image count per set.
    """
    counts = {}
    for wds_dir in wds_dirs:
        eval_set = WdsEvalSet(Path(data_root) / wds_dir)
        if not eval_set.exists():
            continue
        target = Path(out) / wds_dir
        target.mkdir(parents=True, exist_ok=True)
        count = 0
        for sample in eval_set.raw_samples():
            extension = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
            if extension is None:
                continue
            key = Path(sample["__key__"]).name  # webdataset keys may carry folders; keep the last part
            (target / f"{key}.{extension}").write_bytes(sample[extension])
            count += 1
        counts[wds_dir] = count
    return counts
