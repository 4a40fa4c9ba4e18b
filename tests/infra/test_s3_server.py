"""The SeaweedFS S3 test server, exercised through fsspec/s3fs and pyarrow."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import uuid

import fsspec
import pytest

from winnow.ops.devstack.s3 import S3Server, find_weed_binary

pytestmark = pytest.mark.s3

BUCKET = "winnow-infra"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3"))
    server.start(timeout=60)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def fs(s3):
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **s3.storage_options)
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)  # creates the bucket
    return fs


def _clean_env() -> dict[str, str]:
    """This process's environment without any AWS / fsspec configuration."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_", "BOTO_"))}


def _files(fs, path: str) -> list[str]:
    # s3fs.find() returns [path] itself for an existing but empty "directory"
    return [p for p, info in fs.find(path, detail=True).items() if info["type"] == "file"]


def test_binary_found():
    assert find_weed_binary().is_file()


def test_server_answers(s3):
    assert s3.endpoint_url.startswith("http://127.0.0.1:")
    opts = s3.storage_options
    assert set(opts) == {"key", "secret", "client_kwargs"}
    assert opts["client_kwargs"]["endpoint_url"] == s3.endpoint_url
    assert s3.start_seconds is not None and s3.start_seconds < 60
    s3.client().list_buckets()
    rss = s3.rss_bytes()
    print(f"weed mini started in {s3.start_seconds:.2f}s, RSS {rss / 2**20:.0f} MiB")


def test_anonymous_access_refused(s3, fs):
    fs.pipe(f"{BUCKET}/private.txt", b"secret")
    anon = fsspec.filesystem(
        "s3", anon=True, skip_instance_cache=True, client_kwargs=s3.storage_options["client_kwargs"]
    )
    # (anon.ls("") returns [] rather than raising: s3fs swallows ListBuckets errors)
    with pytest.raises(PermissionError):
        anon.ls(BUCKET)
    with pytest.raises(PermissionError):
        anon.cat(f"{BUCKET}/private.txt")
    with pytest.raises(PermissionError):
        anon.pipe(f"{BUCKET}/anon.txt", b"x")


def test_wrong_secret_refused(s3):
    opts = dict(s3.storage_options, secret="not-the-secret")
    bad = fsspec.filesystem("s3", skip_instance_cache=True, **opts)
    with pytest.raises(PermissionError):
        bad.ls(BUCKET)


def test_make_bucket(s3, fs):
    name = s3.make_bucket("winnow-made")
    assert s3.make_bucket(name) == name  # idempotent
    fs.invalidate_cache()
    assert name in [p.rstrip("/") for p in fs.ls("")]
    assert fs.exists(name)


def test_bucket_via_fs(fs):
    fs.mkdir("winnow-fsmade")
    assert fs.exists("winnow-fsmade")
    fs.rmdir("winnow-fsmade")
    fs.invalidate_cache()
    assert not fs.exists("winnow-fsmade")


def test_write_read_ls_exists_mv_rm(s3, fs):
    base = f"{BUCKET}/basic"
    p = f"{base}/dir/hello.txt"
    with fs.open(p, "wb") as f:
        f.write(b"hello seaweed")
    with fs.open(p, "rb") as f:
        assert f.read() == b"hello seaweed"
    assert fs.cat(p) == b"hello seaweed"
    assert fs.exists(p)
    assert fs.exists(f"{base}/dir")  # implicit directory
    assert fs.ls(f"{base}/dir") == [p]
    assert fs.ls(base) == [f"{base}/dir"]
    assert fs.info(p)["size"] == len(b"hello seaweed")

    q = f"{base}/dir/renamed.txt"
    fs.mv(p, q)
    assert not fs.exists(p)
    assert fs.exists(q)
    assert fs.cat(q) == b"hello seaweed"
    assert fs.ls(f"{base}/dir") == [q]

    fs.rm(q)
    assert not fs.exists(q)
    with pytest.raises(FileNotFoundError):
        fs.cat(q)

    # directories: recursive put/find/rm
    for i in range(3):
        fs.pipe(f"{base}/tree/sub{i}/f.bin", bytes([i]) * 10)
    assert len(fs.find(f"{base}/tree")) == 3
    fs.rm(f"{base}/tree", recursive=True)
    assert _files(fs, f"{base}/tree") == []  # empty dirs linger: see the next test


def test_empty_dirs_linger_until_pruned(s3, fs):
    """SeaweedFS quirk: a prefix emptied by deletes stays listed (for ~2.5 min per level)."""
    base = f"{BUCKET}/linger"
    for i in range(3):
        fs.pipe(f"{base}/tree/sub{i}/f.bin", bytes([i]) * 10)
    fs.pipe(f"{base}/keep", b"k")
    fs.rm(f"{base}/tree", recursive=True)
    assert _files(fs, f"{base}/tree") == []  # the objects are gone at once
    fs.invalidate_cache()
    # unlike AWS S3 the emptied "directory" is still there for a while
    assert fs.exists(f"{base}/tree")
    assert f"{base}/tree" in fs.ls(base)
    assert s3.prune_empty_dirs(BUCKET, "linger/tree") == 4  # tree/ + 3 subdirs
    fs.invalidate_cache()
    assert not fs.exists(f"{base}/tree")
    assert fs.ls(base) == [f"{base}/keep"]


def test_multipart_20mb(fs):
    p = f"{BUCKET}/big/20mb.bin"
    data = os.urandom(20 * 2**20)
    # s3fs uploads in parts of block_size (default 50 MiB, i.e. one PUT for 20 MB); 5 MiB -> 4 parts
    with fs.open(p, "wb", block_size=5 * 2**20) as f:
        for i in range(0, len(data), 2**20):
            f.write(data[i : i + 2**20])
    info = fs.info(p)
    assert info["size"] == len(data)
    assert "-" in info["ETag"], info["ETag"]  # multipart ETag: "<md5-of-md5s>-<parts>"
    with fs.open(p, "rb", block_size=4 * 2**20) as f:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()
        f.seek(7 * 2**20 + 3)
        assert f.read(100) == data[7 * 2**20 + 3 : 7 * 2**20 + 103]  # ranged GET
    fs.rm(p)


def test_parquet_roundtrip(fs):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"id": list(range(1000)), "caption": [f"caption {i}" for i in range(1000)]})
    pq.write_table(table, f"s3://{BUCKET}/x.parquet", filesystem=fs)
    assert fs.exists(f"{BUCKET}/x.parquet")
    back = pq.read_table(f"s3://{BUCKET}/x.parquet", filesystem=fs)
    assert back.equals(table)
    # also through an fsspec file object
    with fs.open(f"{BUCKET}/x.parquet", "rb") as f:
        assert pq.read_table(f).equals(table)


def test_read_after_write_from_other_client(s3, fs):
    """SeaweedFS is read-after-write consistent, but s3fs caches listings per instance."""
    d = f"{BUCKET}/cache-{uuid.uuid4().hex[:8]}"
    fs.pipe(f"{d}/a", b"a")
    assert fs.ls(d) == [f"{d}/a"]  # listing of d now cached in fs.dircache

    # another writer (another process in real use; here a plain botocore client)
    s3.client().put_object(Bucket=BUCKET, Key=f"{d.split('/', 1)[1]}/b", Body=b"b")

    fresh = fsspec.filesystem("s3", skip_instance_cache=True, **s3.storage_options)
    assert fresh.ls(d) == [f"{d}/a", f"{d}/b"]  # the server shows it at once

    # the old instance serves the cached listing: stale ls, exists() is False, and even
    # reading the new file fails (open() looks the size up in the cached parent listing)
    assert fs.ls(d) == [f"{d}/a"]
    assert not fs.exists(f"{d}/b")
    with pytest.raises(FileNotFoundError):
        fs.cat(f"{d}/b")
    fs.invalidate_cache(d)  # (or fs.invalidate_cache() for everything)
    assert fs.ls(d) == [f"{d}/a", f"{d}/b"]
    assert fs.exists(f"{d}/b")
    assert fs.cat(f"{d}/b") == b"b"

    # an instance without a listings cache always sees the server's state
    nocache = fsspec.filesystem(
        "s3", skip_instance_cache=True, use_listings_cache=False, **s3.storage_options
    )
    assert nocache.ls(d) == [f"{d}/a", f"{d}/b"]
    s3.client().put_object(Bucket=BUCKET, Key=f"{d.split('/', 1)[1]}/c", Body=b"c")
    assert nocache.ls(d) == [f"{d}/a", f"{d}/b", f"{d}/c"]
    assert nocache.cat(f"{d}/c") == b"c"


# ------------------------------------------------------------------ environment
_ENV_PROBE = textwrap.dedent(
    """
    import json, sys, fsspec
    path = sys.argv[1]
    with fsspec.open(path, "wb") as f:
        f.write(b"via env")
    with fsspec.open(path, "rb") as f:
        data = f.read()
    print(json.dumps({"data": data.decode()}))
    """
)


@pytest.mark.parametrize(
    "endpoint_var",
    ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "FSSPEC_S3_ENDPOINT_URL"],
)
def test_env_only_configuration(s3, fs, endpoint_var):
    """AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY + an endpoint variable suffice for fsspec.open."""
    env = _clean_env()
    env.update(
        {
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            endpoint_var: s3.endpoint_url,
            # keep any ~/.aws files of the machine out of it
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
    )
    path = f"s3://{BUCKET}/env/{endpoint_var}.txt"
    r = subprocess.run(
        [sys.executable, "-c", _ENV_PROBE, path],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"data": "via env"}
    assert fs.cat(path) == b"via env"


def test_env_fsspec_only(s3, fs):
    """fsspec's own FSSPEC_S3_* variables alone (no AWS_* at all) also work."""
    env = _clean_env()
    env.update(
        {
            "FSSPEC_S3_KEY": s3.access_key,
            "FSSPEC_S3_SECRET": s3.secret_key,
            "FSSPEC_S3_ENDPOINT_URL": s3.endpoint_url,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
    )
    path = f"s3://{BUCKET}/env/fsspec-only.txt"
    r = subprocess.run(
        [sys.executable, "-c", _ENV_PROBE, path], env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert fs.cat(path) == b"via env"


def test_env_in_process(s3, fs, monkeypatch):
    """In-process: botocore reads AWS_* when the client is created, so new instances see them."""
    import s3fs

    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    s3fs.S3FileSystem.clear_instance_cache()
    path = f"s3://{BUCKET}/env/in-process.txt"
    with fsspec.open(path, "wb") as f:
        f.write(b"in process")
    with fsspec.open(path, "rb") as f:
        assert f.read() == b"in process"
    s3fs.S3FileSystem.clear_instance_cache()
