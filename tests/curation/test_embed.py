"""The embed stage: DataComp's npz sidecar and CLIP-score columns, aligned with the ledger."""

from __future__ import annotations

import io

import numpy as np
import pytest

from winnow.services.embed.stage import EmbedStage
from winnow.shared.models.clip import OpenClipEncoder
from winnow.shared.models.provider import clip_factory
from winnow.shared.shards import read_table


def test_embeddings_and_scores_line_up_with_the_ledger(downloaded, tiny_clip_checkpoint):
    _, refs = downloaded
    stage = EmbedStage({"tiny": clip_factory("winnow-tiny-ViT", tiny_clip_checkpoint),
                        "tiny2": clip_factory("winnow-tiny-ViT", tiny_clip_checkpoint)})
    for ref in refs:
        out = stage.process(ref)
        ledger = read_table(out.uri).to_pylist()
        with np.load(io.BytesIO(open(out.uri + ".npz", "rb").read())) as npz:
            assert sorted(npz.files) == ["tiny2_img", "tiny2_txt", "tiny_img", "tiny_txt"]
            image, text = npz["tiny_img"], npz["tiny_txt"]
        assert image.shape == (len(ledger), 128) and image.dtype == np.float16
        for index, row in enumerate(ledger):
            if row["status"] == "success":
                assert abs(np.linalg.norm(image[index].astype(np.float32)) - 1) < 1e-2
                cosine = float(image[index].astype(np.float32) @ text[index].astype(np.float32))
                assert abs(cosine - row["clip_tiny_similarity_score"]) < 5e-3
            else:
                assert not image[index].any() and row["clip_tiny_similarity_score"] is None


def test_the_checkpoint_is_really_loaded(tiny_clip_checkpoint):
    loaded = OpenClipEncoder("winnow-tiny-ViT", tiny_clip_checkpoint)
    fresh = OpenClipEncoder("winnow-tiny-ViT")
    texts = ["a cat", "a dog"]
    np.testing.assert_allclose(loaded.embed_texts(texts), OpenClipEncoder("winnow-tiny-ViT", tiny_clip_checkpoint)
                               .embed_texts(texts), atol=1e-6)
    assert not np.allclose(loaded.embed_texts(texts), fresh.embed_texts(texts), atol=1e-3)
    with pytest.raises(FileNotFoundError):
        OpenClipEncoder("winnow-tiny-ViT", "/nonexistent/ckpt.pt")
    with pytest.raises(ValueError, match="unknown CLIP architecture"):
        OpenClipEncoder("ViT-Q-99")
