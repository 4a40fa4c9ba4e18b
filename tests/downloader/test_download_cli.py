"""``winnow download`` as an img2dataset user runs it: its defaults, its spellings, refusals, and safe reruns."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from winnow.cli import build_parser, main
from winnow.services.downloader.pool import read_pool
from winnow.shared.shards import read_table
from tests.downloader.wandb_records import logged_history, run_config


def download(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["download", *args, "--disable_progress", "True"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["download", "--url_list", "pool.parquet", *args])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" not in err
    return err


@pytest.mark.parametrize(("args", "says"), [
    (["--output_format", "tfrecord"], "use webdataset"),
    (["--output_format", "dummy"], "use webdataset"),
    (["--distributor", "pyspark"], "Kafka consumer group"),
    (["--distributor", "ray"], "winnow submit"),
    (["--upscale_interpolation", "bicubic"], "only 'lanczos'"),
    (["--downscale_interpolation", "bilinear"], "only 'area'"),
    (["--compute_hash", "sha1"], "md5, sha256, sha512"),
    (["--verify_hash", '["sha256"]'], "[COLUMN, HASH_TYPE]"),
    (["--disallowed_header_directives", '["noai","nofollow"]'], "unknown X-Robots-Tag directive"),
    (["--incremental_mode", "append"], "incremental, overwrite or extend"),
    (["--extract_exif", "maybe"], "True or False"),
])
def test_each_refusal_says_why_and_what_to_use(capsys, args, says):
    assert says in refused(capsys, *args)


def test_img2dataset_spellings_and_defaults_are_taken():
    args = build_parser().parse_args([
        "download", "--url_list", "p", "--output_format", "webdataset", "--enable_wandb", "False",
        "--save_additional_columns", '["uid"]', "--verify_hash", '["sha256","sha256"]', "--resize_only_if_bigger",
        "True", "--disallowed_header_directives", "[]", "--caption_col", "None", "--compute_hash", "None"])
    assert (args.enable_wandb, args.save_additional_columns, args.verify_hash) == (False, ["uid"], ["sha256", "sha256"])
    assert args.resize_only_if_bigger is True and args.disallowed_header_directives == []
    assert args.caption_col is None and args.compute_hash is None
    defaults = build_parser().parse_args(["download", "--url_list", "p"])
    assert (defaults.image_size, defaults.resize_mode, defaults.resize_only_if_bigger) == (256, "border", False)
    assert (defaults.output_format, defaults.thread_count, defaults.retries, defaults.oom_shard_count) == \
        ("files", 256, 0, 5)
    assert (defaults.compute_hash, defaults.verify_hash, defaults.extract_exif) == ("sha256", None, True)
    assert defaults.disallowed_header_directives == ["noai", "noimageai", "noindex", "noimageindex"]
    run = build_parser().parse_args(["run", "pool.parquet", "--out", "o"])
    assert (run.image_size, run.resize_mode, run.resize_only_if_bigger) == (512, "keep_ratio_largest", True)
    assert run.verify_hash is None and run.bbox_col == "face_bboxes"


def test_every_option_shows_its_default_in_help():
    import argparse

    root = build_parser()
    subparsers = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("download", "redownload", "run"):
        parser = subparsers.choices[command]
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.option_strings and action.dest != "help" and action.default is not argparse.SUPPRESS:
                assert "(default:" in formatter._format_action(action), (command, action.dest)


def test_compressed_inputs_and_folders_of_them(tmp_path):
    rows = "url,caption\nhttp://a.example/1.jpg,one\nhttp://a.example/2.jpg,two\n"
    (tmp_path / "pool.csv.gz").write_bytes(gzip.compress(rows.encode()))
    (tmp_path / "pool.tsv.gz").write_bytes(gzip.compress(rows.replace(",", "\t").encode()))
    lines = "".join(json.dumps({"url": f"http://a.example/{i}.jpg", "caption": str(i)}) + "\n" for i in (1, 2))
    (tmp_path / "pool.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    for name in ("pool.csv.gz", "pool.tsv.gz", "pool.jsonl.gz"):
        table = read_pool(str(tmp_path / name), caption_col="caption")
        assert table["url"].to_pylist() == ["http://a.example/1.jpg", "http://a.example/2.jpg"], name
    folder = tmp_path / "parts"
    folder.mkdir()
    for part in range(3):
        (folder / f"{part:05d}.csv.gz").write_bytes(gzip.compress(rows.encode()))
    assert len(read_pool(str(folder), caption_col="caption")) == 6
    assert len(read_pool(str(folder), input_format="csv.gz", caption_col="caption")) == 6


@pytest.fixture
def loopback_pool(image_server, tmp_path) -> Path:
    urls = [image_server.img_url(n) for n in ("rocket.jpg", "coffee.png", "camera.png")]
    path = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"url": urls, "caption": ["rocket", "coffee", "camera"]}), path)
    return path


def test_img2dataset_defaults_pad_small_images_to_256(capsys, loopback_pool, tmp_path):
    out = tmp_path / "out"
    code, stdout, _ = download(capsys, "--url_list", str(loopback_pool), "--output_folder", str(out),
                               "--allow_networks", "127.0.0.0/8")
    assert code == 0, stdout
    kept = sorted((out / "00000").glob("*.jpg"))  # img2dataset's default output_format: files
    assert len(kept) == 3
    for path in kept:
        assert Image.open(path).size == (256, 256), "border mode pads every image to image_size"


def test_reruns_are_safe(capsys, loopback_pool, tmp_path):
    out = str(tmp_path / "job")
    common = ["--url_list", str(loopback_pool), "--output_folder", out, "--output_format", "webdataset",
              "--number_sample_per_shard", "2"]
    code, stdout, _ = download(capsys, *common)
    assert code == 0
    assert "blocked_address: 3" in stdout
    assert "pass --allow_networks" in stdout, "the summary names the flag"
    recorded = json.loads((tmp_path / "job" / "job.json").read_text())["options"]
    assert recorded["image_size"] == 256 and recorded["allow_networks"] == []

    code, _, err = download(capsys, *common, "--allow_networks", "127.0.0.0/8")
    assert code == 2
    assert "--allow_networks: [] -> ['127.0.0.0/8']" in err and "--incremental_mode overwrite" in err

    code, stdout, _ = download(capsys, *common, "--allow_networks", "127.0.0.0/8", "--incremental_mode", "overwrite")
    assert code == 0
    assert sum(json.loads(p.read_text())["successes"] for p in (tmp_path / "job").glob("*_stats.json")) == 3

    code, stdout, _ = download(capsys, *common, "--allow_networks", "127.0.0.0/8", "--thread_count", "4")
    assert code == 0, "a runtime option (thread_count) may change on a rerun"
    assert "skipping 2 of 2 shards already finished" in stdout

    code, stdout, _ = download(capsys, *common, "--allow_networks", "127.0.0.0/8", "--incremental_mode", "extend",
                               "--image_size", "64")
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "job").glob("*.tar")) == [f"{i:05d}.tar" for i in range(4)]
    assert read_table(f"{out}/00002")["width"].to_pylist() == [64, 64]


def test_bbox_col_blurs_and_keeps_the_column(capsys, image_server, tmp_path):
    path = tmp_path / "pool.parquet"
    boxes = pa.array([[[0.0, 0.0, 0.5, 0.5]], []], pa.list_(pa.list_(pa.float64())))
    pq.write_table(pa.table({"url": [image_server.img_url("large.jpg")] * 2, "face_bboxes": boxes}), path)
    out = tmp_path / "out"
    code, _, _ = download(capsys, "--url_list", str(path), "--output_folder", str(out), "--output_format",
                          "parquet", "--bbox_col", "face_bboxes", "--allow_networks", "127.0.0.0/8")
    assert code == 0
    table = pq.read_table(out / "00000.parquet")
    assert table["face_bboxes"].to_pylist() == [[[0.0, 0.0, 0.5, 0.5]], []]
    blurred, plain = (Image.open(io.BytesIO(b)) for b in table["jpg"].to_pylist())
    assert blurred.tobytes() != plain.tobytes()


def test_wandb_logs_the_download_offline_as_img2dataset_does(capsys, loopback_pool, tmp_path, monkeypatch):
    """wandb itself, in offline mode (no account, no network): the run's config and img2dataset's totals."""
    pytest.importorskip("wandb", reason="wandb is in the test extra; without it --enable_wandb is refused")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    code, _, _ = download(capsys, "--url_list", str(loopback_pool), "--output_folder", str(tmp_path / "o"),
                          "--enable_wandb", "True", "--wandb_project", "winnow-test", "--allow_networks",
                          "127.0.0.0/8", "--number_sample_per_shard", "2")
    assert code == 0
    runs = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    project, config = run_config(runs[0])
    assert project == "winnow-test"
    assert (config["image_size"], config["resize_mode"]) == ("256", '"border"')
    history = logged_history(runs[0])
    assert [h["total/count"] for h in history] == ["2", "3"]  # once per finished shard
    assert history[-1]["total/success"] == "1" and float(history[-1]["total/img_per_sec"]) > 0


def test_a_failing_shard_is_tried_again_then_reported_and_the_others_finish(loopback_pool, tmp_path, monkeypatch):
    from winnow.services.downloader import stage as stage_module
    from winnow.services.downloader.cli import download_options, download_refs
    from winnow.services.downloader.pool import prepare_job

    reads: list[int] = []
    real_read = stage_module.read_pool_slice
    monkeypatch.setattr(stage_module, "read_pool_slice", lambda ref: reads.append(ref.shard_id) or real_read(ref))

    out = str(tmp_path / "job")
    manifest = prepare_job(str(loopback_pool), out, caption_col="caption", samples_per_shard=2)
    (tmp_path / "job" / "pool" / "00000001.parquet").write_bytes(b"PAR1 not a parquet file")
    args = build_parser().parse_args(["download", "--url_list", str(loopback_pool), "--output_folder", out,
                                      "--output_format", "webdataset", "--allow_networks", "127.0.0.0/8"])
    options = download_options(args, "img2dataset")
    failed = download_refs(manifest.pool_refs(), options, processes=1, show_progress=False, max_shard_retry=2)
    assert [shard for shard, _ in failed] == [1]
    assert "unreadable pool slice" in failed[0][1]
    assert (tmp_path / "job" / "00000_stats.json").exists()
    assert not (tmp_path / "job" / "00001_stats.json").exists()
    assert reads.count(1) == 3, "the failing shard is tried once, then max_shard_retry (2) more times"
    assert reads.count(0) == 1


def test_shards_that_no_job_describes_are_not_mixed_in(capsys, loopback_pool, tmp_path):
    """An img2dataset output folder is refused, and replaced only with --incremental_mode overwrite."""
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "00000_stats.json").write_text('{"count": 1, "successes": 1}')
    common = ["--url_list", str(loopback_pool), "--output_folder", str(out), "--allow_networks", "127.0.0.0/8"]
    code, _, err = download(capsys, *common)
    assert code == 2 and "no winnow job.json describes" in err
    assert json.loads((out / "00000_stats.json").read_text()) == {"count": 1, "successes": 1}
    code, stdout, _ = download(capsys, *common, "--incremental_mode", "overwrite")
    assert code == 0 and "removing the previous output" in stdout
    assert json.loads((out / "00000_stats.json").read_text())["count"] == 3


def test_winnow_run_keeps_datacomps_download_settings():
    """DataComp's flow: no hash check, the pool's face_bboxes blurred unless --skip_bbox_blurring."""
    from winnow.services.downloader.cli import download_options

    run = download_options(build_parser().parse_args(["run", "pool.parquet", "--out", "o"]))
    assert run.verify_hash is None and run.bbox_col == "face_bboxes"
    assert (run.resize.image_size, run.resize.resize_mode.value, run.resize.resize_only_if_bigger) == \
        (512, "keep_ratio_largest", True)
    assert run.layout.shard_dir == "downloader" and run.layout.shard_digits == 8
    skipped = download_options(build_parser().parse_args(["run", "p", "--out", "o", "--skip_bbox_blurring"]))
    assert skipped.bbox_col is None


@pytest.mark.parametrize("output_format", ["files", "parquet"])
def test_redownload_rewrites_files_and_parquet_shards_with_the_jobs_options(capsys, image_server, tmp_path,
                                                                            output_format):
    token = f"{output_format}-{tmp_path.name}"
    urls = [image_server.img_url("rocket.jpg"), image_server.url(f"/flaky503/{token}/coffee.png")]
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"url": urls, "caption": ["rocket", "coffee"]}), pool)
    out = tmp_path / "out"
    code, stdout, _ = download(capsys, "--url_list", str(pool), "--output_folder", str(out), "--output_format",
                               output_format, "--caption_col", "caption", "--image_size", "96",
                               "--allow_networks", "127.0.0.0/8")
    assert code == 0 and "http_503: 1" in stdout
    assert main(["redownload", "--output_folder", str(out)]) == 0
    assert "1 recovered" in capsys.readouterr().out
    table = pq.read_table(out / "00000.parquet")
    assert table["status"].to_pylist() == ["success", "success"]
    if output_format == "files":
        images = sorted((out / "00000").glob("*.jpg"))
        assert [p.name for p in images] == ["000000000.jpg", "000000001.jpg"]
        assert all(Image.open(p).size == (96, 96) for p in images)
        assert (out / "00000" / "000000000.txt").read_text() == "rocket"
    else:
        assert all(Image.open(io.BytesIO(b)).size == (96, 96) for b in table["jpg"].to_pylist())
