"""Generated protobuf code is reproducible, and stale or hand-edited code is caught."""

from __future__ import annotations

import shutil

import pytest

from winnow.shared import protogen


@pytest.fixture
def scratch_repo(tmp_path, monkeypatch):
    """A copy of protos/ so the tests can break it without touching the checkout."""
    shutil.copytree(protogen.PROTO_DIR, tmp_path / "protos")
    monkeypatch.setattr(protogen, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(protogen, "PROTO_DIR", tmp_path / "protos")
    monkeypatch.setattr(protogen, "STAMP", tmp_path / "protos" / "winnow" / ".generated.json")
    protogen.generate()
    return tmp_path


def test_generation_is_reproducible(scratch_repo):
    assert protogen.problems() == []
    assert protogen.main(["--check"]) == 0


def test_a_hand_edited_generated_file_is_caught(scratch_repo):
    generated = scratch_repo / "protos" / "winnow" / "v1" / "shard_pb2.py"
    generated.write_text(generated.read_text() + "\n# a hand edit\n")
    assert any("edited by hand" in p for p in protogen.problems())
    assert protogen.main(["--check"]) == 1
    with pytest.raises(protogen.GeneratedCodeError, match="python -m winnow.shared.protogen"):
        protogen.ensure_generated()


def test_a_changed_proto_makes_the_code_stale(scratch_repo):
    source = scratch_repo / "protos" / "winnow" / "v1" / "shard.proto"
    source.write_text(source.read_text() + "\nmessage Extra { string x = 1; }\n")
    assert any("stale" in p for p in protogen.problems())
    assert protogen.main(["--check"]) == 1
