"""The resolver every request and bus-message path goes through: each spelling of "outside" is refused."""

from __future__ import annotations

import os

import pytest

from winnow.shared.access import AccessDenied, AccessPolicy, InvalidReference, check_identifier
from winnow.shared.messages import make_ref


@pytest.fixture
def layout(tmp_path):
    storage = tmp_path / "storage"
    (storage / "job").mkdir(parents=True)
    (storage / "job" / "pool.parquet").write_bytes(b"PAR1")
    secret = tmp_path / "secret.txt"
    secret.write_text("canary")
    os.symlink(secret, storage / "link.txt")
    os.symlink(tmp_path, storage / "dirlink")
    pools = tmp_path / "pools"
    pools.mkdir()
    policy = AccessPolicy(read_roots=(str(pools), "s3://bucket/pools"), write_roots=(str(storage), "s3://bucket/runs"))
    return policy, storage, secret, pools


def test_paths_inside_the_roots_resolve_to_their_real_path(layout):
    policy, storage, _, pools = layout
    assert policy.read(str(storage / "job" / "pool.parquet"), "pool_uri") == str(storage / "job" / "pool.parquet")
    assert policy.read(f"file://{storage}/job/../job/pool.parquet", "pool_uri") == str(storage / "job" / "pool.parquet")
    assert policy.read(str(pools / "p.parquet"), "pool_uri") == str(pools / "p.parquet")
    assert policy.write(str(storage / "new" / "job"), "output_uri") == str(storage / "new" / "job")
    assert policy.read(str(storage / "job" / "{00000000..00000001}.tar"), "data_dirs").endswith("}.tar")
    assert policy.read("s3://bucket/runs/j/pool", "uri") == "s3://bucket/runs/j/pool"
    assert policy.read("s3://bucket//pools/x.parquet", "uri") == "s3://bucket/pools/x.parquet"


@pytest.mark.parametrize("spelling", [
    "{secret}", "file://{secret}", "local://{secret}", "{storage}/../secret.txt", "{storage}/job/../../secret.txt",
    "{storage}/link.txt", "{storage}/dirlink/secret.txt", "/etc/passwd", "file:///etc/passwd",
    "{storage}-sibling/x", "{storage}/*/../../secret.txt", "{storage}/*.txt", "{storage}/{{link,x}}.txt",
    "{storage}/{{dirlink,job}}/secret.txt", "{storage}/*/secret.txt",
])
def test_every_spelling_of_a_file_outside_is_refused(layout, spelling):
    policy, storage, secret, _ = layout
    uri = spelling.format(secret=secret, storage=storage)
    with pytest.raises((AccessDenied, InvalidReference)) as refused:
        policy.read(uri, "pool_uri")
    assert "canary" not in str(refused.value)
    if isinstance(refused.value, AccessDenied):
        assert "WINNOW_READ_ROOTS" in str(refused.value)


def test_the_read_roots_are_not_write_roots(layout):
    policy, _, _, pools = layout
    with pytest.raises(AccessDenied, match="WINNOW_WRITE_ROOTS"):
        policy.write(str(pools / "job"), "output_uri")
    with pytest.raises(AccessDenied, match="WINNOW_WRITE_ROOTS"):
        policy.write("s3://bucket/pools/job", "output_uri")


@pytest.mark.parametrize(("uri", "setting"), [
    ("s3://other/runs/x", "WINNOW_READ_ROOTS"), ("s3://bucket/other/x", "WINNOW_READ_ROOTS"),
    ("s3://bucket/runsx/y", "WINNOW_READ_ROOTS"), ("gs://bucket/runs/x", "WINNOW_READ_ROOTS"),
    ("memory://x", "WINNOW_READ_ROOTS"), ("pipe:touch /tmp/x", "WINNOW_ALLOW_PIPE_SOURCES"),
    ("{pipe:touch /tmp/x,a}", "WINNOW_ALLOW_PIPE_SOURCES"),
    ("simplecache::file:///etc/passwd", "WINNOW_ALLOW_PROTOCOL_CHAINS"),
    ("simplecache::s3://bucket/runs/x", "WINNOW_ALLOW_PROTOCOL_CHAINS"),
    ("http://127.0.0.1:8080/pool.csv", "WINNOW_ALLOW_NETWORKS"), ("http://localhost:8080/x", "WINNOW_ALLOW_NETWORKS"),
    ("http://169.254.169.254/latest", "WINNOW_ALLOW_NETWORKS"), ("http://10.0.0.1/x", "WINNOW_ALLOW_NETWORKS"),
    # fsspec splits any '::' as a chain, IPv6 literals included: refused before the guard is asked
    ("http://[::1]/x", "WINNOW_ALLOW_PROTOCOL_CHAINS"),
])
def test_schemes_buckets_shells_chains_and_internal_addresses_are_refused(layout, uri, setting):
    policy, *_ = layout
    with pytest.raises(AccessDenied) as refused:
        policy.read(uri, "uri")
    assert setting in str(refused.value)


def test_dot_segments_in_object_keys_are_invalid(layout):
    policy, *_ = layout
    with pytest.raises(InvalidReference):
        policy.read("s3://bucket/runs/../secrets/x", "uri")


def test_what_an_operator_switches_on_is_allowed(layout):
    _, storage, secret, _ = layout
    policy = AccessPolicy(read_roots=(), write_roots=(str(storage),), allow_pipe_sources=True,
                          allow_protocol_chains=True, allow_networks=("127.0.0.0/8",))
    assert policy.read("pipe:cat x", "data_dirs") == "pipe:cat x"
    assert policy.read(f"simplecache::file://{storage}/job/pool.parquet", "uri")
    with pytest.raises(AccessDenied):  # a chain still only reaches inside the roots
        policy.read(f"simplecache::file://{secret}", "uri")
    with pytest.raises(AccessDenied):
        policy.read(f"zip::file://{storage}/job/pool.parquet", "uri")
    assert policy.read("http://127.0.0.1:9/pool.csv", "pool_uri") == "http://127.0.0.1:9/pool.csv"
    with pytest.raises(AccessDenied):  # never written to, whatever is allowed
        policy.write("pipe:cat > x", "output_dir")
    with pytest.raises(AccessDenied):
        policy.write("http://127.0.0.1:9/x", "output_uri")


def test_public_hosts_pass_the_address_guard(layout):
    policy, *_ = layout
    pinned = AccessPolicy(read_roots=policy.read_roots, write_roots=policy.write_roots,
                          resolve_host=lambda host: ["93.184.215.14"] if host == "data.example" else ["127.0.0.1"])
    assert pinned.read("https://data.example/crawl.warc.gz", "uri")
    with pytest.raises(AccessDenied, match="loopback"):
        pinned.read("https://rebound.example/x", "uri")
    for literal in ("http://[::1]/x", "https://[::ffff:127.0.0.1]/x", "http://[fd00:ec2::254]/"):
        with pytest.raises(AccessDenied, match="WINNOW_ALLOW_NETWORKS"):
            policy.check_url(literal, "uri")


@pytest.mark.parametrize("value", ["../../x", "/abs/job", "a/b", "..", ".hidden", "", "x" * 129, "a\x00b", "job id"])
def test_ids_are_identifiers_never_paths(value):
    with pytest.raises(InvalidReference):
        check_identifier(value, "job_id")


def test_identifiers_pass():
    for value in ("3f2a9c1e0b7d4a55", "example", "crawl-e2e", "job_1.v2"):
        assert check_identifier(value, "job_id") == value


def test_a_bus_message_is_admitted_only_inside_the_roots(layout):
    policy, storage, secret, _ = layout
    inside = make_ref(job_id="j1", shard_id=0, stage="pool", uri=str(storage / "job" / "pool" / "00000000"),
                      sample_count=1, job_root=str(storage / "job"), shard_count=1)
    policy.admit(inside)
    for fields in ({"uri": str(secret)}, {"job_root": "/tmp/elsewhere"}, {"job_id": "../../x"}):
        ref = make_ref(**{"job_id": "j1", "shard_id": 0, "stage": "pool", "uri": str(storage / "job"),
                          "sample_count": 1, "job_root": str(storage / "job"), "shard_count": 1, **fields})
        with pytest.raises((AccessDenied, InvalidReference)):
            policy.admit(ref)
    with pytest.raises(AccessDenied):  # the evaluator writes beside the run a message names
        policy.admit(make_ref(job_id="j1", shard_id=0, stage="trainer", uri="s3://bucket/pools/run", sample_count=0,
                              job_root="", shard_count=1), uri_access="write", writes_job_root=False)
