"""The cap on CPU threads per model call reaches torch and every onnxruntime session made under it,
and ``winnow run`` sets it from its workers and stages (a real run, real models)."""

from __future__ import annotations

import json

import pytest
import torch

from winnow.shared.models.cpu_threads import default_model_threads, limit_model_threads, model_threads
from winnow.shared.models.faces import CenterFaceDetector
from winnow.shared.models.nsfw import OpenNSFW


def intra_op_threads(session) -> int:
    return session.get_session_options().intra_op_num_threads


def test_the_default_caps_only_when_the_callers_fill_the_cpus():
    assert default_model_threads(8, cpus=2) == 1
    assert default_model_threads(2, cpus=2) == 1
    assert default_model_threads(8, cpus=16) is None


def test_the_cap_reaches_torch_and_new_sessions_and_torch_is_restored_after():
    before = torch.get_num_threads()
    with limit_model_threads(1):
        assert (model_threads(), torch.get_num_threads()) == (1, 1)
        capped = [OpenNSFW(), CenterFaceDetector()]
    assert (model_threads(), torch.get_num_threads()) == (None, before)
    assert [intra_op_threads(m._session) for m in capped] == [1, 1]
    assert intra_op_threads(OpenNSFW()._session) == 0, "outside the block: onnxruntime's own default"
    with pytest.raises(ValueError, match=">= 1"):
        with limit_model_threads(0):
            pass


def test_winnow_run_caps_its_models_and_records_the_choice(tmp_path, caplog):
    """The example pool with safety alone: the NSFW model's session, made as the stage starts, says
    it has the cap asked for; torch's setting is back as it was after the run."""
    import logging

    import winnow

    caplog.set_level(logging.INFO, logger="winnow.shared.models.nsfw")
    before = torch.get_num_threads()
    winnow.run(None, tmp_path / "job", example=True, stages=["download", "safety"], filter="none",
               model_threads=1, show_progress=False)
    loaded = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loaded open-nsfw")]
    assert loaded and all(m.endswith(", 1 CPU thread(s) per call") for m in loaded)
    assert torch.get_num_threads() == before
    assert json.loads((tmp_path / "job" / "job.json").read_text())["options"]["model_threads"] == 1


def test_a_negative_cap_is_refused_before_the_job_is_written(tmp_path):
    import winnow

    with pytest.raises(ValueError, match="model_threads must be >= 0"):
        winnow.run(None, tmp_path / "job", example=True, stages=["download", "safety"], model_threads=-1)
    assert not (tmp_path / "job").exists()
