"""`winnow submit` puts a local pool where the stack's downloader may read pools (its read roots)."""

from __future__ import annotations

import fsspec
import pytest

from winnow.ops.devstack.cli import _upload_pool
from winnow.ops.topology import pools_root


def test_a_local_pool_goes_to_the_pools_folder_beside_the_job_storage(tmp_path):
    pool = tmp_path / "mine.parquet"
    pool.write_bytes(b"PAR1 pretend")
    state = {"job_root": str(tmp_path / "stack" / "runs"), "s3_endpoint": ""}
    uri = _upload_pool(pool, state)
    assert uri == str(tmp_path / "stack" / "pools" / "mine.parquet")
    assert (tmp_path / "stack" / "pools" / "mine.parquet").read_bytes() == b"PAR1 pretend"
    with pytest.raises(FileNotFoundError):
        _upload_pool(tmp_path / "missing.parquet", state)


@pytest.mark.s3
def test_on_s3_it_goes_to_the_pools_prefix(tmp_path, s3_server, s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    pool = tmp_path / "mine.csv"
    pool.write_text("url,text\n")
    uri = _upload_pool(pool, {"job_root": f"{s3_bucket}/runs", "s3_endpoint": s3_server.endpoint_url})
    assert uri == f"{pools_root(s3_bucket + '/runs')}/mine.csv" == f"{s3_bucket}/pools/mine.csv"
    fs = fsspec.filesystem("s3", **s3_server.storage_options)
    assert fs.cat_file(uri.removeprefix("s3://")) == b"url,text\n"
