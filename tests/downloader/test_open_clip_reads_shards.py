"""open_clip's own training data loader reads the downloader's shards as they are."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from winnow.services.downloader.fetch import FetchOptions
from winnow.services.downloader.pool import prepare_job
from winnow.services.downloader.stage import DownloadOptions, DownloadStage


def test_open_clip_training_loader_reads_downloaded_shards(web, tmp_path):
    torch = pytest.importorskip("torch")
    open_clip = pytest.importorskip("open_clip")
    from open_clip_train.data import get_wds_dataset
    from open_clip_train.params import parse_args

    names = web.names()[:8]
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"url": [web.img_url(n) for n in names], "text": [f"a photo of {n}" for n in names]}), pool)
    manifest = prepare_job(str(pool), str(tmp_path / "job"), samples_per_shard=4)
    stage = DownloadStage(DownloadOptions(fetch=FetchOptions(allow_networks=("127.0.0.0/8",)), thread_count=4))
    for ref in manifest.pool_refs():
        stage.process(ref)

    shards = str(tmp_path / "job" / "downloader" / "{00000000..00000001}.tar")
    args = parse_args(["--train-data", shards, "--train-num-samples", "8", "--batch-size", "4",
                       "--workers", "1", "--model", "ViT-B-32"])
    args.world_size, args.rank, args.distributed = 1, 0, False
    _, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    data = get_wds_dataset(args, preprocess, is_train=True, epoch=0, tokenizer=tokenizer)
    images, texts = next(iter(data.dataloader))
    assert images.shape == (4, 3, 224, 224)
    assert texts.shape == (4, 77)
    assert torch.isfinite(images).all()
