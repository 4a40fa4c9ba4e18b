"""img2dataset's own command line, run by img2dataset itself and by ``winnow download``, on one local pool.

img2dataset 1.47.0 runs from its own virtualenv (``benchmarks.download.ensure_img2dataset``,
cached under ``~/.cache/winnow``), so nothing of it leaks into the project's environment. The
same verbatim arguments go to both tools; winnow gets one more, ``--allow_networks
127.0.0.0/8``, because the pool is on loopback, which winnow refuses by default and img2dataset
does not guard. Each output format must give the same layout: file names, tar members, parquet
columns and types, ``_stats.json`` keys, and the same samples kept with the same sizes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks.download import IMG2DATASET_VENV, BenchmarkError, ensure_img2dataset, tool_environment
from winnow.services.downloader.options import IMG2DATASET_OPTIONS

REPO = Path(__file__).resolve().parents[2]
WINNOW_ONLY_FILES = {"job.json", "pool"}  # winnow's record of the job and its input cut in shards
WINNOW_ONLY_COLUMNS = {"reason", "dropped_by"}  # the ledger's machine-readable reason, and later stages' column


@pytest.fixture(scope="module")
def img2dataset() -> Path:
    try:
        return ensure_img2dataset(IMG2DATASET_VENV)
    except (BenchmarkError, subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"img2dataset 1.47.0 could not be installed in its own virtualenv: {exc}")


@pytest.fixture(scope="module")
def pool(web, tmp_path_factory) -> Path:
    names = web.names()[:6]
    urls = [web.img_url(n) for n in names] + [web.url("/status/404"), web.url("/notimage")]
    path = tmp_path_factory.mktemp("parity") / "pool.parquet"
    pq.write_table(pa.table({"url": urls, "caption": [f"a photo {i}" for i in range(len(urls))],
                             "uid": [f"{i:032x}" for i in range(len(urls))]}), path)
    return path


def verbatim(pool: Path, output_format: str) -> list[str]:
    """A command line as img2dataset's README and DataComp's scripts write them."""
    return ["--url_list", str(pool), "--input_format", "parquet", "--url_col", "url", "--caption_col", "caption",
            "--output_format", output_format, "--enable_wandb", "False", "--save_additional_columns", '["uid"]',
            "--number_sample_per_shard", "3", "--processes_count", "1", "--thread_count", "8",
            "--distributor", "multiprocessing", "--incremental_mode", "incremental"]


def run_both(img2dataset: Path, args: list[str], out: Path) -> tuple[Path, Path]:
    theirs, ours = out / "img2dataset", out / "winnow"
    done = subprocess.run([str(img2dataset), *args, "--output_folder", str(theirs)], env=tool_environment(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run([sys.executable, "-m", "winnow.cli", "download", *args, "--output_folder", str(ours),
                           "--allow_networks", "127.0.0.0/8", "--disable_progress"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return theirs, ours


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.relative_to(folder).parts[0] not in WINNOW_ONLY_FILES}


def ledger(folder: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted(folder.glob("*.parquet"))])


def assert_same_columns(theirs: pa.Schema, ours: pa.Schema) -> None:
    """img2dataset's columns, in its order and with its types, then only winnow's own."""
    assert [(f.name, f.type) for f in ours][: len(theirs)] == [(f.name, f.type) for f in theirs]
    assert set(ours.names[len(theirs):]) <= WINNOW_ONLY_COLUMNS


def kept(table: pa.Table) -> dict[str, tuple[int, int]]:
    rows = table.select(["key", "status", "width", "height"]).to_pylist()
    return {r["key"]: (r["width"], r["height"]) for r in rows if r["status"] == "success"}


@pytest.mark.parametrize("output_format", ["webdataset", "files", "parquet"])
def test_the_same_command_line_gives_the_same_layout(img2dataset, pool, tmp_path, output_format):
    theirs, ours = run_both(img2dataset, verbatim(pool, output_format), tmp_path)

    assert listing(ours) == listing(theirs)
    for stats in sorted(theirs.glob("*_stats.json")):
        assert set(json.loads(stats.read_text())) <= set(json.loads((ours / stats.name).read_text()))
    for shard in sorted(theirs.glob("*.parquet")):
        assert_same_columns(pq.read_schema(shard), pq.read_schema(ours / shard.name))
    their_ledger, our_ledger = ledger(theirs), ledger(ours)
    assert kept(our_ledger) == kept(their_ledger)
    assert len(kept(our_ledger)) == 6
    assert sorted(our_ledger["status"].to_pylist()) == sorted(their_ledger["status"].to_pylist())

    if output_format == "webdataset":
        for tar in sorted(theirs.glob("*.tar")):
            with tarfile.open(tar) as a, tarfile.open(ours / tar.name) as b:
                assert sorted(a.getnames()) == sorted(b.getnames())
                captions = {n: b.extractfile(n).read() for n in b.getnames() if n.endswith(".txt")}
                assert captions == {n: a.extractfile(n).read() for n in a.getnames() if n.endswith(".txt")}
    if output_format == "parquet":
        images = {r["key"]: r["jpg"] for r in our_ledger.select(["key", "jpg"]).to_pylist()}
        assert all(images[key] for key in kept(our_ledger))


def test_every_img2dataset_option_is_taken(img2dataset):
    """img2dataset's download() signature, read from the installed package, against winnow's parser."""
    from winnow.cli import build_parser

    code = "import inspect, json, img2dataset; print(json.dumps(list(inspect.signature(img2dataset.download).parameters)))"
    names = json.loads(subprocess.run([str(img2dataset.parent / "python"), "-c", code], capture_output=True,
                                      text=True, check=True, env=tool_environment()).stdout)
    assert len(names) >= 35
    assert set(names) == set(IMG2DATASET_OPTIONS), "the README's option table names every option"
    subparsers = next(a for a in build_parser()._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
    download = subparsers.choices["download"]
    taken = {option for action in download._actions for option in action.option_strings}
    assert {f"--{name}" for name in names} <= taken
