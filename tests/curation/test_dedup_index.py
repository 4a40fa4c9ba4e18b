"""The pool index against brute force: the same near-duplicate pairs, idempotent claims, the IVF switch."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from winnow.services.dedup.index import PoolRegistry
from winnow.services.dedup.pool_index import BinaryPoolIndex, PoolIndexConfig, hamming_radius, sign_bits
from winnow.shared.models.near_duplicates import PerceptualHashDescriptor


def _real_images() -> list[np.ndarray]:
    from skimage import data

    names = ("astronaut", "camera", "cat", "chelsea", "coffee", "coins", "rocket", "hubble_deep_field",
             "immunohistochemistry", "motorcycle_left", "page", "text", "brick", "grass", "gravel", "moon")
    images = []
    for name in names:
        try:
            image = getattr(data, name)()
        except Exception:  # a dataset image that needs a download
            continue
        image = np.asarray(Image.fromarray(image).convert("RGB"))
        images.append(image)
        # tiles cut from it: more distinct images of the same kind
        h, w = image.shape[:2]
        images += [image[y:y + h // 2, x:x + w // 2] for y in (0, h // 2) for x in (0, w // 2)]
    return images


def _copy(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smaller, cropped by 1 %, JPEG-recompressed: a near-duplicate."""
    pil = Image.fromarray(image)
    w, h = pil.size
    pil = pil.crop((w // 100, h // 100, w - w // 100, h - h // 100))
    pil = pil.resize((max(8, int(pil.width * rng.uniform(0.4, 0.8))), max(8, int(pil.height * rng.uniform(0.4, 0.8)))))
    buffer = io.BytesIO()
    pil.save(buffer, "JPEG", quality=int(rng.integers(40, 90)))
    return np.asarray(Image.open(buffer).convert("RGB"))


@pytest.fixture(scope="module")
def hashed():
    rng = np.random.default_rng(0)
    originals = _real_images()
    images = originals + [_copy(image, rng) for image in originals for _ in range(2)]
    order = rng.permutation(len(images))
    descriptor = PerceptualHashDescriptor()
    return descriptor, descriptor.describe([images[i] for i in order])


def _brute_force(vectors: np.ndarray, threshold: float) -> list[tuple[int, float]]:
    """First come, first kept, one sample at a time against every kept one (the flat reference)."""
    kept, out = [], []
    for i, v in enumerate(vectors):
        best, owner = 0.0, i
        if kept:
            similarity = vectors[kept] @ v
            j = int(np.argmax(similarity))
            best = max(0.0, float(similarity[j]))
            if similarity[j] >= threshold:
                owner = kept[j]
        if owner == i:
            kept.append(i)
        out.append((owner, best))
    return out


def _uids(n: int) -> list[str]:
    return [f"{i:032x}" for i in range(n)]


@pytest.mark.parametrize("backend", ["flat", "multihash"])
def test_hashes_find_exactly_the_pairs_of_brute_force(hashed, tmp_path, backend):
    descriptor, vectors = hashed
    expected = _brute_force(vectors, descriptor.threshold)
    assert sum(owner != i for i, (owner, _) in enumerate(expected)) >= 40, "the set must hold many near-duplicates"
    uids = _uids(len(vectors))
    registry = PoolRegistry(tmp_path / "r.sqlite", descriptor.dim, descriptor.threshold, binary=True,
                            config=PoolIndexConfig(binary_backend=backend))
    answers = []
    for start in range(0, len(vectors), 16):
        answers += registry.claim_images(vectors[start:start + 16], uids[start:start + 16])
    registry.commit()
    owners = [uids.index(owner) for owner, _ in answers]
    assert owners == [owner for owner, _ in expected]
    assert all(abs(a[1] - e[1]) < 1e-6 for a, e in zip(answers, expected)), "the nearest earlier cosine too"
    # Reprocessing: the same answers from a reopened registry, whatever order the batches come in.
    registry.close()
    again = PoolRegistry(tmp_path / "r.sqlite", descriptor.dim, descriptor.threshold, binary=True)
    assert again.claim_images(vectors[::-1], uids[::-1]) == answers[::-1]
    again.close()


def test_multihash_is_exact_within_the_radius():
    rng = np.random.default_rng(1)
    dim, radius = 256, 56
    codes = rng.integers(0, 256, (5000, dim // 8), dtype=np.uint8)
    bits = np.unpackbits(codes[:200], axis=1)
    for row in bits:
        row[rng.choice(dim, int(rng.integers(0, radius + 8)), replace=False)] ^= 1
    queries = np.packbits(bits, axis=1)
    flat, multi = BinaryPoolIndex(dim, radius, "flat"), BinaryPoolIndex(dim, radius, "multihash")
    flat.add(codes)
    multi.add(codes)
    s_flat, p_flat = flat.search(queries, 1)
    s_multi, p_multi = multi.search(queries, 1)
    within = s_flat[:, 0] >= 1 - 2 * radius / dim
    assert within.sum() > 150
    assert np.array_equal(p_flat[within, 0], p_multi[within, 0])
    assert np.array_equal(s_flat[within, 0], s_multi[within, 0])


def test_float_descriptors_past_the_flat_limit_use_the_factory_index(tmp_path):
    rng = np.random.default_rng(2)
    dim, threshold = 64, 0.9
    base = rng.normal(size=(600, dim)).astype(np.float32)
    noisy = base[:300] + 0.1 * rng.normal(size=(300, dim)).astype(np.float32)
    vectors = np.concatenate([base, noisy])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = _brute_force(vectors, threshold)
    uids = _uids(len(vectors))
    config = PoolIndexConfig(flat_limit=200, factory="IVF4,Flat", search_params="nprobe=4")
    registry = PoolRegistry(tmp_path / "f.sqlite", dim, threshold, binary=False, config=config)
    answers = []
    for start in range(0, len(vectors), 64):
        answers += registry.claim_images(vectors[start:start + 64], uids[start:start + 64])
    assert registry.index.kind == "IVF4,Flat"
    assert [uids.index(owner) for owner, _ in answers] == [owner for owner, _ in expected]
    assert sum(uids.index(owner) != i for i, (owner, _) in enumerate(answers)) == 300
    registry.commit()
    registry.close()
    again = PoolRegistry(tmp_path / "f.sqlite", dim, threshold, binary=False, config=config)
    assert again.index.kind == "IVF4,Flat" and again.index.ntotal == 600
    assert again.claim_images(vectors[:64], uids[:64]) == answers[:64]
    again.close()


def test_hash_claims_are_first_come_within_a_batch_and_idempotent(tmp_path):
    registry = PoolRegistry(tmp_path / "h.sqlite", 256, 0.5, binary=True)
    uids = _uids(4)
    assert registry.claim_hashes([("a", uids[0]), ("b", uids[1]), ("a", uids[2])]) == [uids[0], uids[1], uids[0]]
    assert registry.claim_hashes([("a", uids[2]), ("a", uids[0])]) == [uids[0], uids[0]]
    registry.close()  # uncommitted: a crash before the shard's marker forgets these claims
    registry = PoolRegistry(tmp_path / "h.sqlite", 256, 0.5, binary=True)
    assert registry.claim_hashes([("a", uids[3])]) == [uids[3]]
    registry.commit()
    registry.close()
    registry = PoolRegistry(tmp_path / "h.sqlite", 256, 0.5, binary=True)
    assert registry.claim_hashes([("a", uids[0])]) == [uids[3]]
    registry.close()


def test_sign_bits_and_radius():
    descriptor = PerceptualHashDescriptor()
    assert hamming_radius(descriptor.threshold, descriptor.dim) == descriptor.max_hamming
    assert sign_bits(np.full((1, 256), 1 / 16, np.float32)) is not None
    assert sign_bits(np.full((1, 256), 0.1, np.float32)) is None


def test_the_stage_commits_each_shard_before_its_marker(downloaded, tmp_path):
    import sqlite3

    from winnow.services.dedup.stage import DedupOptions, DedupStage
    from winnow.shared.models.provider import model_factory
    from winnow.shared.shards import read_table

    _, refs = downloaded
    stage = DedupStage(model_factory("near_duplicate", "offline"), DedupOptions(registry_dir=str(tmp_path / "reg")))
    out = [stage.process(ref) for ref in refs]
    stage.teardown()  # closes without committing: whatever is in the file was committed per shard
    db = sqlite3.connect(str(tmp_path / "reg" / f"{refs[0].job_id}.sqlite"))
    answered = {uid for (uid,) in db.execute("SELECT uid FROM answers")}
    kept = {uid for (uid,) in db.execute("SELECT uid FROM images")}
    db.close()
    rows = [row for ref in out for row in read_table(ref.uri).to_pylist()]
    assert kept == {r["uid"] for r in rows if r["status"] == "success"}
    assert {r["uid"] for r in rows if r.get("reason") == "near_duplicate"} <= answered
    assert kept <= answered
