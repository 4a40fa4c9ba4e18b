"""A real curated job for the report tests: ``winnow run --example`` with the embed stage (a tiny
CLIP with fixed random weights), the README's own filter (``examples/my_filters.py``) and a
CLIP-score subset beside it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def winnow(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "winnow.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def with_examples_on_path() -> dict:
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "examples"), os.environ.get("PYTHONPATH")) if p)}


@pytest.fixture(scope="session")
def curated_job(tmp_path_factory, tiny_clip_checkpoint) -> Path:
    job = tmp_path_factory.mktemp("report") / "job"
    run = winnow("run", "--example", "--out", str(job), "--no_progress", "--workers", "1",
                 "--clip_model", f"b32=winnow-tiny-ViT:{tiny_clip_checkpoint}",
                 "--filter", "my_filters:english_top30", env=with_examples_on_path())
    assert run.returncode == 0, run.stdout + run.stderr
    assert "removed, by reason" in run.stdout and "too_few_words" in run.stdout
    subset = winnow("filter", "--name", "clip_score", "--arch", "b32", "--fraction", "0.3",
                    "--metadata_dir", str(job / "embed"), "--save_path", str(job / "filter" / "clip_score.npy"))
    assert subset.returncode == 0, subset.stderr
    return job


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave files for people to look at (not committed)."""
    folder = Path(os.environ.get("WINNOW_TEST_ARTIFACTS", REPO / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
