"""Small sets in the layouts of DataComp's WILDS, fairness, Flickr and WinoGAViL data, from real images.

DataComp's own sets cannot be downloaded here, so these stand in for their *layout* only: real
Fashion-MNIST and openclipart images (via winnow's local sets), with metadata columns, class-name
prefixes and Hugging Face arrow columns as DataComp's readers expect them. Scores on them mean
nothing about a model; they let the oracle check that every reading and metric path is right.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from winnow.services.evaluator.association import cue_prompt
from winnow.services.evaluator.data import WdsEvalSet, decode_image
from winnow.services.evaluator.local_sets import (FASHION_MNIST_CLASSNAMES, FASHION_MNIST_TEMPLATES, fashion_mnist_samples,
                                           write_wds_set)
from tests.evaluator.encoders import OracleEncoder

FAIRFACE_CLASSES = {
    "race": ["black", "white", "indian", "east asian", "southeast asian", "middle eastern", "latino"],
    "gender": ["man", "woman"],
    "age": ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "over 70"],
    "toxic": [f"label {i}" for i in range(20)],
}
FAIRFACE_TEMPLATES = {"race": "a photo of a {c} person", "gender": "a photo of a {c}",
                      "age": "a photo of a person aged {c}", "toxic": "a photo of a {c}"}


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _fashion(n: int, offset: int = 0) -> list[dict]:
    return list(fashion_mnist_samples(n + offset))[offset:]


def write_grouped_set(root: Path, dirname: str, n: int, metadata_for, oracle: OracleEncoder) -> Path:
    """Fashion-MNIST images with an ``npy`` metadata member, in a WILDS / fairness task's folder."""
    samples = []
    for index, sample in enumerate(_fashion(n)):
        label = int(sample["cls"])
        samples.append({**sample, "npy": _npy(np.asarray(metadata_for(index, label), np.int64))})
    built = write_wds_set(root / dirname, samples, classnames=FASHION_MNIST_CLASSNAMES,
                          templates=FASHION_MNIST_TEMPLATES, samples_per_shard=40)
    oracle.learn_classes(FASHION_MNIST_CLASSNAMES, FASHION_MNIST_TEMPLATES)
    for image, label, _ in WdsEvalSet(built.folder).classification_samples():
        oracle.learn_image(image, f"class:{label}")
    return built.folder


def write_fairface_set(root: Path, dirname: str, n: int, oracle: OracleEncoder) -> tuple[Path, np.ndarray]:
    """A FairFace-layout set: ``objective:name`` classes and templates, metadata (age, gender, race, race_binary)."""
    rng = np.random.default_rng(7)
    metadata = np.stack([rng.integers(0, 9, n), rng.integers(0, 2, n), rng.integers(0, 7, n)], axis=1)
    metadata = np.concatenate([metadata, (metadata[:, 2:3] != 1).astype(np.int64)], axis=1)
    samples = [{"__key__": s["__key__"], "png": s["png"], "npy": _npy(metadata[i])}
               for i, s in enumerate(_fashion(n, offset=600))]  # images no other set uses: other concepts
    classnames = [f"{o}:{c}" for o, names in FAIRFACE_CLASSES.items() for c in names]
    templates = [f"{o}:{t}" for o, t in FAIRFACE_TEMPLATES.items()]
    built = write_wds_set(root / dirname, samples, classnames=classnames, templates=templates, samples_per_shard=40)
    for objective, names in FAIRFACE_CLASSES.items():
        oracle.learn_classes(names, [FAIRFACE_TEMPLATES[objective]], prefix=objective)
    for index, (image, _, meta) in enumerate(WdsEvalSet(built.folder).classification_samples(True, False)):
        age, gender, race, _ = meta.tolist()
        oracle.learn_image(image, f"race:{race}", f"gender:{gender}", f"age:{age}", "toxic:0")
    return built.folder, metadata


def _arrow_path(root: Path, hf_dataset: str) -> Path:
    owner, name = hf_dataset.split("/")
    folder = root / "hf_cache" / f"{owner}___{name}" / "default" / "0.0.0" / "0123abcd"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}-test.arrow"


def _write_arrow(path: Path, table) -> None:
    import pyarrow as pa

    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=16):
            writer.write_batch(batch)


def write_flickr_cache(root: Path, retrieval_folder: Path, oracle: OracleEncoder) -> Path:
    """The openclipart retrieval set as an arrow cache in the layout of DataComp's Flickr task,
    ``nlphuji/flickr_1k_test_image_text_retrieval`` (test split; image, caption list)."""
    import pyarrow as pa

    images, captions = [], []
    for sample in WdsEvalSet(retrieval_folder).raw_samples():
        images.append({"bytes": sample["jpg"], "path": sample["__key__"] + ".jpg"})
        captions.append(sample["txt"].decode().splitlines())
    table = pa.table({"image": images, "caption": captions,
                      "img_id": [str(i) for i in range(len(images))]})
    path = _arrow_path(root, "nlphuji/flickr_1k_test_image_text_retrieval")
    _write_arrow(path, table)
    for index, (image, texts) in enumerate(zip(images, captions)):
        oracle.learn_image(decode_image(image["bytes"]), f"flickr:{index}")
        for text in texts:
            oracle.learn_text(text, f"flickr:{index}")
    return path


def write_winogavil_cache(root: Path, oracle: OracleEncoder, sizes=(5, 6, 10, 12, 10, 12)) -> Path:
    """A ``nlphuji/winogavil``-style arrow cache from Fashion-MNIST images: the cue is a class name."""
    import pyarrow as pa

    pool = _fashion(200, offset=300)
    by_class: dict[int, list[dict]] = {}
    for sample in pool:
        by_class.setdefault(int(sample["cls"]), []).append(sample)
    rows = []
    for row_index, size in enumerate(sizes):
        cue_class = row_index % 10
        n_true = 2 + row_index % 2
        chosen = by_class[cue_class][row_index * 3:row_index * 3 + n_true]
        others = [s for c in range(10) if c != cue_class for s in by_class[c][row_index:row_index + 2]]
        candidates = chosen + others[:size - n_true]
        order = np.random.default_rng(row_index).permutation(size)
        candidates = [candidates[i] for i in order]
        rows.append({
            "candidate_images": [{"bytes": s["png"], "path": None} for s in candidates],
            "cue": FASHION_MNIST_CLASSNAMES[cue_class],
            "candidates": [s["__key__"] for s in candidates],
            "associations": [s["__key__"] for s in chosen],
        })
        for sample in candidates:
            oracle.learn_image(decode_image(sample["png"]), f"class:{int(sample['cls'])}")
    for index, name in enumerate(FASHION_MNIST_CLASSNAMES):
        oracle.learn_text(cue_prompt(name), f"class:{index}")
    path = _arrow_path(root, "nlphuji/winogavil")
    _write_arrow(path, pa.Table.from_pylist(rows))
    return path
