"""``import winnow``: each function on real parts, and the same answers as its command.

``winnow.download`` fetches real images from the local image server; ``winnow.run`` curates the
built-in example pool once for the module (about half a minute), and ``filter`` and ``reshard``
work on that job; ``train`` runs a few steps of the tiny CLIP on openclipart shards and
``evaluate`` scores it on small local evaluation sets.
"""

from __future__ import annotations

import inspect
import json
import math
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import winnow
from winnow.services.downloader.options import IMG2DATASET_OPTIONS
from winnow.shared.shards import read_table
from winnow.shared.subset import load_subset
from winnow.cli import main

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = ["127.0.0.0/8"]

# img2dataset 1.47.0's download() defaults, copied from its signature (img2dataset/main.py), in its order.
IMG2DATASET_DEFAULTS = {
    "url_list": inspect.Parameter.empty, "image_size": 256, "output_folder": "images", "processes_count": 1,
    "resize_mode": "border", "resize_only_if_bigger": False, "upscale_interpolation": "lanczos",
    "downscale_interpolation": "area", "encode_quality": 95, "encode_format": "jpg", "skip_reencode": False,
    "output_format": "files", "input_format": "txt", "url_col": "url", "caption_col": None, "bbox_col": None,
    "thread_count": 256, "number_sample_per_shard": 10000, "extract_exif": True, "save_additional_columns": None,
    "timeout": 10, "enable_wandb": False, "wandb_project": "img2dataset", "oom_shard_count": 5,
    "compute_hash": "sha256", "verify_hash": None, "distributor": "multiprocessing", "subjob_size": 1000,
    "retries": 0, "disable_all_reencoding": False, "min_image_size": 0, "max_image_area": float("inf"),
    "max_aspect_ratio": float("inf"), "incremental_mode": "incremental", "max_shard_retry": 1,
    "user_agent_token": None, "disallowed_header_directives": None,
}


def img2dataset_part(signature: inspect.Signature) -> dict:
    """The positional-or-keyword parameters, as img2dataset has them; winnow's own are keyword-only."""
    return {name: p.default for name, p in signature.parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD}


def test_import_winnow_imports_no_torch():
    code = "import sys, winnow; print(sorted(m for m in ('torch', 'open_clip', 'keras') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_download_has_img2dataset_1_47_0s_signature():
    """Checked against a copy of 1.47.0's signature (the test below reads the installed package)."""
    signature = inspect.signature(winnow.download)
    assert list(IMG2DATASET_DEFAULTS) == list(IMG2DATASET_OPTIONS), "the README's table is in img2dataset's order"
    ours = img2dataset_part(signature)
    assert list(ours) == list(IMG2DATASET_DEFAULTS)
    assert ours == IMG2DATASET_DEFAULTS
    extras = [p for p in signature.parameters.values() if p.kind is not p.POSITIONAL_OR_KEYWORD]
    assert extras and all(p.kind is p.KEYWORD_ONLY for p in extras)


def test_download_has_the_installed_img2dataset_signature():
    """img2dataset 1.47.0 in its own virtualenv, as the parity tests run it (skipped without uv)."""
    from benchmarks.download import IMG2DATASET_VENV, BenchmarkError, ensure_img2dataset, tool_environment

    try:
        executable = ensure_img2dataset(IMG2DATASET_VENV)
    except (BenchmarkError, subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"img2dataset 1.47.0 could not be installed in its own virtualenv: {exc}")
    code = ("import inspect, json, img2dataset; print(json.dumps([(n, repr(p.default)) for n, p in "
            "inspect.signature(img2dataset.download).parameters.items()]))")
    theirs = json.loads(subprocess.run([str(executable.parent / "python"), "-c", code], capture_output=True,
                                       text=True, check=True, env=tool_environment()).stdout)
    ours = [(name, repr(default)) for name, default in img2dataset_part(inspect.signature(winnow.download)).items()]
    assert ours == [tuple(item) for item in theirs]


# --- download ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool(web, tmp_path_factory) -> Path:
    urls = [web.img_url(name) for name in web.names()[:5]] + [web.url("/status/404"), web.url("/notimage")]
    path = tmp_path_factory.mktemp("api-pool") / "pool.parquet"
    pq.write_table(pa.table({"url": urls, "caption": [f"a photo number {i}" for i in range(len(urls))]}), path)
    return path


DOWNLOAD = dict(input_format="parquet", caption_col="caption", output_format="webdataset", image_size=64,
                number_sample_per_shard=4, thread_count=8)


def same_run(stats: dict) -> dict:
    """A shard's ``_stats.json`` without what differs between two runs (when, how long, the job id)."""
    return {k: v for k, v in stats.items() if k not in ("duration", "job_id") and "time" not in k}


def shard_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name != "job.json"}


def test_download_writes_img2datasets_layout_as_the_command_does(pool, tmp_path, capsys):
    result = winnow.download(str(pool), output_folder=str(tmp_path / "api"), allow_networks=LOOPBACK,
                             disable_progress=True, **DOWNLOAD)

    ours = tmp_path / "api"
    assert {"00000.tar", "00000.parquet", "00000_stats.json", "00001.tar"} <= shard_files(ours)
    assert result.failed_shards == [] and result.skipped_shards == 0
    assert (result.totals.samples, result.totals.kept) == (7, 5)
    ledger = pa.concat_tables([read_table(str(ours / f"{i:05d}")) for i in range(2)])
    assert ledger.num_rows == result.totals.samples
    assert ledger["status"].to_pylist().count("success") == result.totals.kept
    with tarfile.open(ours / "00000.tar") as tar:
        assert sum(name.endswith(".jpg") for name in tar.getnames()) == 4

    command = ["download", "--url_list", str(pool), "--input_format", "parquet", "--caption_col", "caption",
               "--output_format", "webdataset", "--image_size", "64", "--number_sample_per_shard", "4",
               "--thread_count", "8", "--allow_networks", *LOOPBACK, "--disable_progress", "True"]
    assert main([*command, "--output_folder", str(tmp_path / "cli")]) == 0
    theirs = tmp_path / "cli"
    assert shard_files(ours) - {"pool"} == shard_files(theirs) - {"pool"}
    for stats in sorted(theirs.glob("*_stats.json")):
        assert same_run(json.loads((ours / stats.name).read_text())) == same_run(json.loads(stats.read_text()))

    capsys.readouterr()
    assert main([*command, "--output_folder", str(ours)]) == 0, "the command resumes a job the API made"
    assert "skipping 2 of 2 shards already finished" in capsys.readouterr().out


@pytest.mark.parametrize(("option", "says"), [
    ({"output_format": "tfrecord"}, "use webdataset"),
    ({"distributor": "pyspark"}, "Kafka consumer group"),
    ({"upscale_interpolation": "bicubic"}, "only 'lanczos'"),
    ({"incremental_mode": "append"}, "incremental, overwrite or extend"),
])
def test_download_refuses_what_the_command_refuses(pool, tmp_path, option, says):
    with pytest.raises(ValueError, match=says.replace("'", ".")):
        winnow.download(str(pool), output_folder=str(tmp_path / "out"), **option)
    assert not (tmp_path / "out").exists()


# --- run, filter, reshard ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> winnow.RunResult:
    """The built-in example curated once: download, safety, dedup, blur, then DataComp's basic filter."""
    return winnow.run(None, tmp_path_factory.mktemp("api-run") / "job", example=True, show_progress=False)


def test_run_curates_filters_and_reshards_the_example(job):
    assert [t.stage for t in job.totals] == ["downloader", "safety", "dedup", "blur"]
    assert job.dead_letters == []
    downloaded = job.totals[0]
    assert downloaded.samples == job.manifest.sample_count and downloaded.shards_done == job.manifest.shard_count
    ledger = pa.concat_tables([read_table(f"{job.job_root}/downloader/{i:08d}")
                               for i in range(job.manifest.shard_count)])
    assert ledger["status"].to_pylist().count("success") == downloaded.kept
    for before, after in zip(job.totals, job.totals[1:]):
        assert after.samples == before.kept

    filtered = job.filtered
    assert filtered.name == "basic_filter" and filtered.candidates == job.totals[-1].kept
    assert filtered.kept == len(load_subset(filtered.subset)) == filtered.samples_written > 0
    assert filtered.candidates - filtered.kept == sum(filtered.removed_by.values())
    tars = sorted(Path(filtered.shards).glob("*.tar"))
    assert len(tars) == filtered.shard_count
    with tarfile.open(tars[0]) as tar:
        assert sum(name.endswith(".txt") for name in tar.getnames()) == filtered.samples_written


def test_filter_on_the_job_gives_the_runs_subset_and_the_commands_file(job, tmp_path):
    result = winnow.filter(job.job_root, name="basic_filter", save_path=tmp_path / "api.npy")

    assert np.array_equal(result.uids, load_subset(job.filtered.subset))
    assert (result.kept, result.candidates, result.removed_by) == (job.filtered.kept, job.filtered.candidates,
                                                                   job.filtered.removed_by)
    assert main(["filter", "--name", "basic_filter", "--metadata_dir", f"{job.job_root}/blur",
                 "--save_path", str(tmp_path / "cli.npy")]) == 0
    assert (tmp_path / "api.npy").read_bytes() == (tmp_path / "cli.npy").read_bytes()


def test_reshard_writes_every_sample_of_the_subset(job, tmp_path):
    result = winnow.reshard(job.job_root, tmp_path / "shards", job.filtered.subset, shard_size=8)

    assert result.samples_written == result.expected == job.filtered.kept
    assert result.output_shards == math.ceil(job.filtered.kept / 8)
    assert len(list((tmp_path / "shards").glob("*.tar"))) == result.output_shards

    with pytest.raises(ValueError, match="shard_size must be positive"):
        winnow.reshard(job.job_root, tmp_path / "none", job.filtered.subset, shard_size=0)


# --- train and evaluate -----------------------------------------------------------------------------


STEPS, BATCH = 4, 32


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    pytest.importorskip("open_clip_train")
    from winnow.services.trainer.scales import load_scale
    from tests.trainer.data import write_clipart_shards

    shards = tmp_path_factory.mktemp("api-shards")
    write_clipart_shards(shards, shards=2, per_shard=64, side=64)
    scale = load_scale("tiny").to_json()
    scale.pop("name")
    scale.update(samples_seen=STEPS * BATCH, batch_size=BATCH)
    scale_file = tmp_path_factory.mktemp("api-scale") / "tiny4.json"
    scale_file.write_text(json.dumps(scale))
    return winnow.train(str(scale_file), shards, tmp_path_factory.mktemp("api-runs"), exp_name="tiny4",
                        num_checkpoints=1, workers=0, device="cpu", log_every_n_steps=1, grad_checkpointing=False,
                        show_progress=False)


def test_train_runs_a_tiny_clip(trained):
    assert trained.steps == STEPS and trained.samples_seen == STEPS * BATCH
    assert trained.checkpoint.is_file() and trained.info_path.is_file()
    assert [record.step for record in trained.losses] == list(range(1, STEPS + 1))


def test_evaluate_scores_the_run_as_the_command_does(trained, tmp_path):
    from winnow.services.evaluator.local_sets import FASHION_MNIST_DIR, build_local_sets

    if not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("needs the Debian package dataset-fashion-mnist")
    build_local_sets(tmp_path / "eval", fashion_mnist_size=50, retrieval_size=30, samples_per_shard=64,
                     sets=["fashion_mnist"])

    evaluation = winnow.evaluate(trained.run_dir, data_dir=tmp_path / "eval", output_dir=tmp_path / "api",
                                 tasks=["fashion_mnist"], device="cpu")
    assert set(evaluation.scores) == {"fashion_mnist"} and evaluation.failed == []
    assert 0.0 <= evaluation.scores["fashion_mnist"] <= 1.0
    assert evaluation.summary_file.is_file() and evaluation.local_results_file.is_file()

    assert main(["evaluate", "--train_output_dir", str(trained.run_dir), "--data_dir", str(tmp_path / "eval"),
                 "--output_dir", str(tmp_path / "cli"), "--tasks", "fashion_mnist", "--device", "cpu"]) == 0
    cli = json.loads((tmp_path / "cli" / "eval_summary.json").read_text())
    assert {t["key"]: t["score"] for t in cli["tasks"] if t["status"] == "ok"} == evaluation.scores
