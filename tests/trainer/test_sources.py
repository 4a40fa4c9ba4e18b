"""Training data sources: each kind resolved on real shards, pools downloaded from a real server,
weights that become the drawn proportions, and ``winnow train`` on two weighted sources.

Shards hold real openclipart thumbnails with their titles; each source's samples carry a uid
prefix of their own, so a sample read back says which source it came from.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from winnow.services.downloader.fetch import FetchOptions
from winnow.services.downloader.resize import ResizeOptions
from winnow.services.downloader.stage import DownloadOptions
from winnow.services.trainer import cli
from winnow.services.trainer.scales import load_scale
from winnow.services.trainer.service import TrainerStage, bindings
from winnow.services.trainer.sources import PoolOptions, Source, plan_sampling, resolve_source, resolve_sources, train_data
from winnow.shared import storage
from winnow.shared.access import AccessPolicy
from winnow.shared.jobs import JobManifest
from winnow.shared.proto import training_pb2, training_pb2_grpc
from winnow.shared.service.grpc_server import create_server
from winnow.shared.shards import SUCCESS, ShardWriter, sample_key, shard_prefix
from tests.trainer.data import clipart_samples

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = ("127.0.0.0/8",)


# ---------------------------------------------------------------------------------------------
# Real shards, written by the tests


@pytest.fixture(scope="module")
def images() -> list[tuple[str, bytes]]:
    """48 (caption, JPEG) pairs: openclipart thumbnails, 16 px (content matters little here)."""
    return clipart_samples(48, side=16)


def uid(prefix: str, number: int) -> str:
    return f"{prefix}{number:0{32 - len(prefix)}x}"


def write_winnow_shards(root: Path, sizes: list[int], prefix: str, images, *, stage: str = "reshard",
                        first_shard: int = 0) -> None:
    """Winnow shards (tar, parquet, _stats.json) of ``sizes`` samples, uids starting with ``prefix``."""
    number = 0
    for shard_id, size in enumerate(sizes, start=first_shard):
        writer = ShardWriter(shard_prefix(str(root), shard_id), stage=stage, job_id="sources-test", shard_id=shard_id)
        for index in range(size):
            caption, jpeg = images[number % len(images)]
            key, sample_uid = sample_key(shard_id, index, max(sizes)), uid(prefix, number)
            writer.add({"key": key, "uid": sample_uid, "url": f"https://example.org/{key}.jpg", "text": caption,
                        "status": SUCCESS},
                       {"jpg": jpeg, "txt": caption.encode(),
                        "json": json.dumps({"key": key, "uid": sample_uid}).encode()})
            number += 1
        writer.close()


def write_plain_tars(root: Path, sizes: list[int], prefix: str, images) -> None:
    """img2dataset-style shards ``00000.tar``... alone: no parquet, no markers (counted from the tars)."""
    root.mkdir(parents=True, exist_ok=True)
    number = 0
    for shard_id, size in enumerate(sizes):
        with tarfile.open(root / f"{shard_id:05d}.tar", "w") as tar:
            for index in range(size):
                caption, jpeg = images[number % len(images)]
                key = f"{shard_id:05d}{index:04d}"
                for ext, data in (("jpg", jpeg), ("txt", caption.encode()),
                                  ("json", json.dumps({"key": key, "uid": uid(prefix, number)}).encode())):
                    member = tarfile.TarInfo(f"{key}.{ext}")
                    member.size = len(data)
                    tar.addfile(member, io.BytesIO(data))
                number += 1
            extra = tarfile.TarInfo(f"{shard_id:05d}9999.txt")  # a caption without an image: open_clip skips it
            tar.addfile(extra, io.BytesIO(b""))


def write_job(root: Path, job_id: str, shard_count: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    JobManifest(job_id=job_id, job_root=str(root), pool_uri="pool.parquet", shard_count=shard_count,
                sample_count=shard_count * 10, samples_per_shard=10, created=0.0).save()


def read_uids(patterns: str) -> list[str]:
    """Every sample's uid, read through webdataset as open_clip reads a shard list."""
    import webdataset as wds

    urls = wds.shardlists.expand_urls(patterns)
    return [json.loads(s["json"])["uid"] for s in wds.DataPipeline(wds.SimpleShardList(urls),
                                                                     wds.tarfile_to_samples())]


# ---------------------------------------------------------------------------------------------
# Each kind


def test_shard_folder_with_markers_counts_from_stats_and_skips_unfinished(tmp_path, images):
    write_winnow_shards(tmp_path, [5, 3, 4], "a", images)
    os.remove(tmp_path / "00000002_stats.json")  # a shard still being written
    source = resolve_source(str(tmp_path))
    assert (source.kind, source.shard_count, source.sample_count, source.count_method) == ("shards", 2, 8, "stats")
    assert source.patterns == (f"{tmp_path}/{{00000000..00000001}}.tar",)
    assert sorted(read_uids(source.patterns[0])) == [uid("a", n) for n in range(8)]


def test_folder_without_markers_counts_the_tars_samples(tmp_path, images):
    write_plain_tars(tmp_path, [4, 2, 3], "b", images)
    source = resolve_source(str(tmp_path))
    assert (source.kind, source.shard_count, source.sample_count, source.count_method) == ("shards", 3, 9, "tar")
    assert source.patterns == (f"{tmp_path}/{{00000..00002}}.tar",)


def test_folder_without_markers_counts_from_its_ledgers(tmp_path, images):
    write_winnow_shards(tmp_path, [3, 5], "l", images)
    writer = ShardWriter(shard_prefix(str(tmp_path), 2), stage="downloader", job_id="j", shard_id=2)
    writer.add({"key": "000000020", "uid": uid("l", 99), "url": "https://example.org/gone.jpg", "text": "gone",
                "status": "failed_to_download", "reason": "http_404"})
    writer.add({"key": "000000021", "uid": uid("l", 8), "url": "https://example.org/x.jpg", "text": "x",
                "status": SUCCESS}, {"jpg": images[0][1], "txt": b"x"})
    writer.close()
    for marker in tmp_path.glob("*_stats.json"):  # copied without markers: every tar is used
        marker.unlink()
    source = resolve_source(str(tmp_path))
    assert (source.shard_count, source.sample_count, source.count_method) == (3, 9, "ledger")


def test_job_folder_trains_on_its_resharded_subset(tmp_path, images):
    write_job(tmp_path, "j1", shard_count=3)
    write_winnow_shards(tmp_path / "downloader", [10, 10, 10], "d", images, stage="downloader")
    write_winnow_shards(tmp_path / "reshard", [7, 6], "r", images)
    (tmp_path / "reshard" / "_done.json").write_text("{}")
    source = resolve_source(str(tmp_path))
    assert (source.kind, source.location, source.sample_count) == ("job", f"{tmp_path}/reshard", 13)
    assert "resharded subset" in source.detail and "still being written" not in source.detail
    assert set(read_uids("::".join(source.patterns))) == {uid("r", n) for n in range(13)}


def test_job_without_subset_trains_on_its_furthest_stage(tmp_path, images):
    write_job(tmp_path, "j2", shard_count=3)
    write_winnow_shards(tmp_path / "downloader", [10, 10, 10], "d", images, stage="downloader")
    write_winnow_shards(tmp_path / "safety", [8, 9], "s", images, stage="safety")  # shard 2 not through safety yet
    (tmp_path / "filter").mkdir()  # the filter's folder holds no shards: not a stage to train on
    source = resolve_source(str(tmp_path))
    assert (source.kind, source.location, source.shard_count, source.sample_count) == (
        "job", f"{tmp_path}/safety", 2, 17)
    assert "safety/ (2 of 3 shards finished)" in source.detail


def test_job_whose_stages_only_annotate_needs_its_subset(tmp_path, images):
    """Today's curation stages write ledgers, not tars: training on the downloader's tars would
    take back every sample they dropped, so a job without its resharded subset is an error."""
    write_job(tmp_path, "j4", shard_count=1)
    write_winnow_shards(tmp_path / "downloader", [10], "d", images, stage="downloader")
    (tmp_path / "safety").mkdir()
    (tmp_path / "safety" / "00000000.parquet").write_bytes((tmp_path / "downloader" / "00000000.parquet").read_bytes())
    (tmp_path / "safety" / "00000000_stats.json").write_text("{}")
    with pytest.raises(ValueError, match="no resharded subset, and its safety/ stage writes ledgers, not images"):
        resolve_source(str(tmp_path))


def test_job_with_nothing_finished_is_an_error(tmp_path):
    write_job(tmp_path, "j3", shard_count=2)
    with pytest.raises(ValueError, match="job j3 .* has no finished shards yet"):
        resolve_source(str(tmp_path))


def test_single_tar_and_brace_pattern_and_pipe(tmp_path, images):
    write_winnow_shards(tmp_path, [3, 4, 5], "p", images)
    single = resolve_source(str(tmp_path / "00000001.tar"))
    assert (single.kind, single.patterns, single.sample_count) == ("pattern", (str(tmp_path / "00000001.tar"),), 4)
    braces = resolve_source(f"{tmp_path}/{{00000000..00000002}}.tar")
    assert (braces.kind, braces.shard_count, braces.sample_count) == ("pattern", 3, 12)
    pipe = f"pipe:cat {tmp_path}/{{00000000..00000001}}.tar"
    uncounted, = resolve_sources([pipe])  # without weights a pipe is not run just to count it
    assert (uncounted.patterns, uncounted.sample_count, uncounted.proportion) == ((pipe,), None, None)
    counted, other = resolve_sources([pipe, str(tmp_path / "00000002.tar")], [1, 1])
    assert (counted.shard_count, counted.sample_count, counted.count_method) == (2, 7, "tar")
    with pytest.raises(FileNotFoundError, match="1 of the 2 shards of .* do not exist"):
        resolve_sources([f"{tmp_path}/{{00000002..00000003}}.tar"])


@pytest.mark.s3
def test_object_storage_folder_is_streamed_through_fsspec(tmp_path, images, s3_bucket):
    local = tmp_path / "local"
    write_winnow_shards(local, [4, 6], "s3", images)
    remote = f"{s3_bucket}/shards"
    for path in sorted(local.iterdir()):
        storage.put_file(str(path), f"{remote}/{path.name}")
    source = resolve_source(f"{remote}/")
    assert (source.kind, source.shard_count, source.sample_count, source.count_method) == ("shards", 2, 10, "stats")
    pattern, = source.patterns
    assert pattern.startswith("pipe:") and f"{remote}/{{00000000..00000001}}.tar" in pattern
    assert sorted(read_uids(pattern)) == [uid("s3", n) for n in range(10)]  # webdataset opens it as open_clip does


# ---------------------------------------------------------------------------------------------
# Pools, downloaded with the downloader stage


@pytest.fixture
def pool_options() -> PoolOptions:
    fetch = FetchOptions(allow_networks=LOOPBACK, retries=0, timeout=2, total_timeout=5)
    return PoolOptions(download=DownloadOptions(fetch=fetch, resize=ResizeOptions(image_size=64), thread_count=4),
                       samples_per_shard=4)


def write_pool(path: Path, web, names: list[str], bad_urls: list[str] = ()) -> list[str]:
    urls = [web.img_url(n) for n in names] + list(bad_urls)
    pq.write_table(pa.table({"url": urls, "text": [f"a photo of {Path(u).stem}" for u in urls]}), path)
    return urls


def test_pool_is_downloaded_once_and_resumed(tmp_path, web, pool_options):
    names = web.names()[:9]
    write_pool(tmp_path / "extra.parquet", web, names, [web.url("/status/404")])
    work = tmp_path / "run"
    web.reset_stats()
    source = resolve_source(str(tmp_path / "extra.parquet"), work_dir=str(work), pool=pool_options)
    download = work / "sources" / "extra" / "downloader"
    assert (source.kind, source.name, source.location) == ("pool", "extra", str(download))
    assert (source.shard_count, source.sample_count, source.count_method) == (3, 9, "stats")  # 10 rows, 4 a shard
    assert sum(web.hits.values()) == 10
    captions = sorted(s["txt"].decode() for s in _samples("::".join(source.patterns)))
    assert captions == sorted(f"a photo of {Path(n).stem}" for n in names)

    web.reset_stats()
    again = resolve_source(str(tmp_path / "extra.parquet"), work_dir=str(work), pool=pool_options)
    assert sum(web.hits.values()) == 0  # finished shards are not fetched again
    assert again == source

    os.remove(download / "00000001_stats.json")  # as if the download had stopped during shard 1
    web.reset_stats()
    resumed = resolve_source(str(tmp_path / "extra.parquet"), work_dir=str(work), pool=pool_options)
    assert sorted(web.hits) == sorted(f"/img/{n}" for n in names[4:8])  # shard 1's rows only
    assert resumed.sample_count == 9


def test_a_rank_that_does_not_download_waits_for_the_one_that_does(tmp_path, web, pool_options):
    from concurrent.futures import ThreadPoolExecutor

    write_pool(tmp_path / "extra.parquet", web, web.names()[:6])
    web.reset_stats()
    resolve = lambda download: resolve_source(str(tmp_path / "extra.parquet"), work_dir=str(tmp_path / "run"),  # noqa: E731
                                              pool=pool_options, download=download)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(resolve, False)  # rank 1 starts first: it must wait, not download
        time.sleep(0.5)
        assert not waiting.done()
        downloaded = resolve(True)
        assert waiting.result(timeout=30) == downloaded
    assert downloaded.sample_count == 6 and sum(web.hits[f"/img/{n}"] for n in web.names()[:6]) == 6


def _samples(patterns: str) -> list[dict]:
    import webdataset as wds

    return list(wds.DataPipeline(wds.SimpleShardList(wds.shardlists.expand_urls(patterns)), wds.tarfile_to_samples()))


def test_pool_without_usable_rows_is_an_error(tmp_path, web, pool_options):
    pq.write_table(pa.table({"url": pa.array([], pa.string()), "text": pa.array([], pa.string())}),
                   tmp_path / "empty.parquet")
    with pytest.raises(ValueError, match="pool .*empty.parquet has no rows"):
        resolve_source(str(tmp_path / "empty.parquet"), work_dir=str(tmp_path / "run"), pool=pool_options)
    write_pool(tmp_path / "broken.parquet", web, [], [web.url("/status/404"), web.url("/notimage"), ""])
    with pytest.raises(ValueError, match=r"has no usable rows: none of its 3 samples .*http_404"):
        resolve_source(str(tmp_path / "broken.parquet"), work_dir=str(tmp_path / "run"), pool=pool_options)
    (tmp_path / "nourl.csv").write_text("link,caption\nhttp://x/1.jpg,one\n")
    with pytest.raises(ValueError, match="no url column 'url'"):
        resolve_source(str(tmp_path / "nourl.csv"), work_dir=str(tmp_path / "run"), pool=pool_options)


def test_csv_pool_is_a_source_too(tmp_path, web, pool_options):
    names = web.names()[:3]
    (tmp_path / "more.csv").write_text("url,text\n" + "".join(f"{web.img_url(n)},clip {i}\n"
                                                               for i, n in enumerate(names)))
    source = resolve_source(str(tmp_path / "more.csv"), work_dir=str(tmp_path / "run"), pool=pool_options)
    assert (source.kind, source.sample_count) == ("pool", 3)


# ---------------------------------------------------------------------------------------------
# Weights


def counted(name: str, samples: int, shards: int, weight: float | None) -> Source:
    return Source(name=name, kind="shards", spec=name, location=name,
                  patterns=tuple(f"{name}/{i:05d}.tar" for i in range(shards)), shard_count=shards,
                  sample_count=samples, count_method="stats", weight=weight)


def test_weights_become_factors_that_give_the_proportions_whatever_the_sizes():
    # 1 big shard of 10,000 samples, 40 shards of 25 samples, 3 shards of 100
    sources = plan_sampling([counted("a", 10_000, 1, 0.2), counted("b", 1_000, 40, 0.5), counted("c", 300, 3, 0.3)])
    assert [s.proportion for s in sources] == pytest.approx([0.2, 0.5, 0.3])
    # open_clip draws shards in proportion to their factor and reads them whole
    drawn = [s.upsampling_factor * s.sample_count for s in sources]
    assert [d / sum(drawn) for d in drawn] == pytest.approx([0.2, 0.5, 0.3])
    data, factors = train_data(sources)
    assert len(data.split("::")) == len(factors.split("::")) == 44  # one factor per pattern
    assert factors.split("::")[:2] == [f"{0.2 * 11_300 / 10_000:.8g}", f"{0.5 * 11_300 / 1_000:.8g}"]
    # the weights need not sum to one
    assert [s.proportion for s in plan_sampling([counted("a", 10, 1, 7), counted("b", 5, 2, 3)])] == [0.7, 0.3]


def test_without_weights_sources_are_drawn_in_proportion_to_their_sizes():
    sources = plan_sampling([counted("a", 300, 1, None), counted("b", 100, 4, None)])
    assert [s.proportion for s in sources] == [0.75, 0.25]
    assert train_data(sources)[1] is None  # open_clip draws every shard alike


@pytest.mark.parametrize("weights, message", [
    ([1.0], "1 data weights for 2 data sources"),
    ([0.5, -0.5], "must be positive"),
    ([0.5, 0.0], "must be positive"),
    ([0.5, math.nan], "must be positive"),
])
def test_bad_weights(tmp_path, images, weights, message):
    write_winnow_shards(tmp_path, [2], "w", images)
    with pytest.raises(ValueError, match=message):
        resolve_sources([str(tmp_path), str(tmp_path)], weights)


def test_unknown_sources_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="training data source .*nowhere does not exist"):
        resolve_sources([str(tmp_path / "nowhere")])
    (tmp_path / "notes.md").write_text("hi")
    with pytest.raises(ValueError, match="neither a shard folder, a job folder, a .tar nor a pool file"):
        resolve_sources([str(tmp_path / "notes.md")])
    with pytest.raises(ValueError, match="webdataset cannot list a https folder"):
        resolve_sources(["https://example.org/shards/"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "00000.tar").write_bytes(b"")
    with pytest.raises(ValueError, match="00000.tar is not a readable tar"):
        resolve_sources([str(tmp_path / "empty")])


@pytest.fixture(scope="module")
def three_sources(tmp_path_factory, images) -> list[str]:
    """Uneven on purpose: 2 winnow shards of 12 and 4 samples; 6 plain tars of 2; a job's reshard/ of 4 x 5."""
    root = tmp_path_factory.mktemp("mix")
    write_winnow_shards(root / "a", [12, 4], "a", images)
    write_plain_tars(root / "b", [2] * 6, "b", images)
    write_job(root / "c", "jc", shard_count=4)
    write_winnow_shards(root / "c" / "reshard", [5] * 4, "c", images)
    (root / "c" / "reshard" / "_done.json").write_text("{}")
    return [str(root / "a"), str(root / "b"), str(root / "c")]


def drawn_proportions(data: str, factors: str | None, samples: int) -> dict[str, float]:
    """Draw ``samples`` samples as open_clip's resampled loader does and count them by uid prefix."""
    import webdataset as wds
    from open_clip_train.data import ResampledShards2, filter_no_caption_or_no_image, tarfile_to_samples_nothrow

    shards = ResampledShards2(data, weights=factors, deterministic=True, worker_seed=lambda: 0)
    counts: Counter = Counter()
    for sample in wds.DataPipeline(shards, tarfile_to_samples_nothrow, wds.select(filter_no_caption_or_no_image)):
        counts[json.loads(sample["json"])["uid"][0]] += 1
        if sum(counts.values()) == samples:
            break
    return {prefix: n / samples for prefix, n in sorted(counts.items())}


def test_open_clips_loader_draws_the_weighted_proportions(three_sources):
    weights = [0.2, 0.3, 0.5]
    sources = resolve_sources(three_sources, weights)
    assert [(s.kind, s.shard_count, s.sample_count) for s in sources] == [
        ("shards", 2, 16), ("shards", 6, 12), ("job", 4, 20)]
    data, factors = train_data(sources)
    drawn = drawn_proportions(data, factors, 20_000)
    # about 4,500 shard draws: the proportions' standard deviation is under 0.01
    assert drawn == pytest.approx(dict(zip("abc", weights)), abs=0.03)
    # open_clip's own reading of a weight (a factor per shard) would have drawn something else
    naive = "::".join(f"{w:g}" for s, w in zip(sources, weights) for _ in s.patterns)
    assert max(abs(drawn_proportions(data, naive, 20_000)[k] - w) for k, w in zip("abc", weights)) > 0.06


def test_without_weights_the_loader_draws_in_proportion_to_size(three_sources):
    sources = resolve_sources(three_sources)
    assert [s.proportion for s in sources] == pytest.approx([16 / 48, 12 / 48, 20 / 48])
    data, factors = train_data(sources)
    assert factors is None
    drawn = drawn_proportions(data, factors, 20_000)
    # without factors open_clip draws every shard alike, and a source yields its share of the samples
    assert drawn == pytest.approx({"a": 16 / 48, "b": 12 / 48, "c": 20 / 48}, abs=0.03)


# ---------------------------------------------------------------------------------------------
# The trainer service and winnow train


@pytest.fixture
def trainer_api(tmp_path, tmp_path_factory):
    stage = TrainerStage("tiny", str(tmp_path / "runs"), workers=0, device="cpu", allow_networks=LOOPBACK)
    # the pools and shard folders of these tests lie beside the runs: the operator's read roots say so
    policy = AccessPolicy(read_roots=(str(tmp_path_factory.getbasetemp()),), write_roots=(str(tmp_path / "runs"),))
    server, port, _ = create_server("127.0.0.1:0", bindings(stage, policy)(None))
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield training_pb2_grpc.TrainerStub(channel), stage
    stage.teardown()
    server.stop(0)


def test_start_run_refuses_bad_sources(trainer_api, three_sources, tmp_path):
    stub, stage = trainer_api
    for data_dirs, weights, message in [
        ([str(tmp_path / "nowhere")], [], "nowhere does not exist"),
        (three_sources, [1.0, 2.0], "2 data weights for 3 data sources"),
        (three_sources[:2], [1.0, -1.0], "must be positive"),
        ([f"{three_sources[0]}/{{00000000..00000002}}.tar"], [], "1 of the 3 shards of"),  # a has shards 0 and 1
    ]:
        with pytest.raises(grpc.RpcError) as error:
            stub.StartRun(training_pb2.StartRunRequest(data_dirs=data_dirs, data_weights=weights))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in error.value.details()
    assert not stage.runs


def test_start_run_takes_a_job_a_shard_folder_and_a_pool(trainer_api, three_sources, tmp_path, web):
    stub, stage = trainer_api
    write_pool(tmp_path / "extra.parquet", web, web.names()[:3])
    data_dirs = [three_sources[2], three_sources[1], str(tmp_path / "extra.parquet")]
    state = stub.StartRun(training_pb2.StartRunRequest(data_dirs=data_dirs, data_weights=[0.5, 0.25, 0.25],
                                                       exp_name="byod"))
    assert state.state in ("queued", "running")
    try:
        deadline = time.monotonic() + 120
        while not (run := stub.GetRun(training_pb2.GetRunRequest(run_id=state.run_id))).sources:
            assert run.state in ("queued", "running"), run.error
            assert time.monotonic() < deadline, "the run did not resolve its sources within 120 s"
            time.sleep(0.2)
    finally:
        stub.CancelRun(training_pb2.GetRunRequest(run_id=state.run_id))
    assert [(s.name, s.kind, s.sample_count) for s in run.sources] == [("c", "job", 20), ("b", "shards", 12),
                                                                       ("extra", "pool", 3)]
    assert [s.proportion for s in run.sources] == pytest.approx([0.5, 0.25, 0.25])
    assert run.sources[2].location == str(tmp_path / "runs" / "byod" / "sources" / "extra" / "downloader")


def test_cli_reports_bad_sources(tmp_path, capsys):
    code = cli.main(["--scale", "tiny", "--data_dir", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path),
                     "--device", "cpu"])
    assert code == 2 and "nowhere does not exist" in " ".join(capsys.readouterr().err.split())  # rich wraps lines


@pytest.mark.slow
def test_winnow_train_on_a_job_and_a_pool_with_weights(tmp_path, web, three_sources):
    """``winnow train`` as a user runs it: a job folder and a pool parquet, 0.7 and 0.3, a short tiny scale."""
    write_pool(tmp_path / "photos.parquet", web, web.names()[:8])
    tiny = load_scale("tiny").to_json()
    tiny.pop("name")
    tiny["samples_seen"] = 2 * 4 * 32  # 2 checkpoints of 4 steps of 32
    (tmp_path / "short.json").write_text(json.dumps(tiny))
    command = [sys.executable, "-m", "winnow.cli", "train", "--scale", str(tmp_path / "short.json"),
               "--data_dir", three_sources[2], "--data_dir", str(tmp_path / "photos.parquet"),
               "--data_weights", "0.7", "0.3", "--output_dir", str(tmp_path / "runs"), "--exp_name", "byod",
               "--num_checkpoints", "2", "--workers", "0", "--device", "cpu", "--log_every_n_steps", "1",
               "--allow_networks", "127.0.0.0/8", "--image_size", "64", "--pool_samples_per_shard", "3"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "byod"
    info = json.loads((run_dir / "info.json").read_text())
    assert (run_dir / "checkpoints" / "epoch_2.pt").exists() and info["steps"] == 8
    job, pool = info["sources"]
    assert (job["kind"], job["location"], job["sample_count"], job["proportion"]) == (
        "job", f"{three_sources[2]}/reshard", 20, pytest.approx(0.7))
    assert (pool["kind"], pool["sample_count"], pool["shard_count"], pool["proportion"]) == (
        "pool", 8, 3, pytest.approx(0.3))
    assert pool["location"] == str(run_dir / "sources" / "photos" / "downloader")
    args = info["open_clip_args"]
    factors = [float(f) for f in args[args.index("--train-data-upsampling-factors") + 1].split("::")]
    assert factors == pytest.approx([0.7 * 28 / 20, 0.3 * 28 / 8], rel=1e-6)  # one pattern each
    assert info["train_data_upsampling_factors"] == args[args.index("--train-data-upsampling-factors") + 1]
    assert json.loads((run_dir / "sources.json").read_text()) == info["sources"]
