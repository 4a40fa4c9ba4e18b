"""scripts/namespace_imports.py rewrites module names under ``winnow.``, leaves the rest, and is idempotent.

(The script never rewrites this file: the samples below must keep the old names.)
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("namespace_imports", REPO / "scripts" / "namespace_imports.py")
namespace_imports = sys.modules["namespace_imports"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(namespace_imports)

BEFORE = '''"""Uses shared.storage; services.s3 is not a module."""
import os, shared
import protos.winnow.v1.shard_pb2 as shard_pb2
from shared.storage import open_uri  # see shared.access
from winnow.shared import config
from . import sibling
if True:
    from services.downloader import stage; from shared import bus
    from shared.triton import (
        client,  # services.blur
    )
patch("shared.storage.open_uri")
command = [sys.executable, "-m", "services.trainer.train"]
message = "docker-compose.yml: services.safety.environment: missing"
path = f"services.{name}.environment"
attribute = "services.dedup.command"
factory = "shared.models.clip:OpenClipEncoder"
exported = "services.evaluator.is_eval_holdout"
kept = "shared.storage"  # namespace-imports: skip
generated = "protos.winnow.v1.curation_pb2"
unrelated = self.services.safety
'''

AFTER = '''"""Uses winnow.shared.storage; services.s3 is not a module."""
import os, winnow.shared as shared
import winnow.protos.winnow.v1.shard_pb2 as shard_pb2
from winnow.shared.storage import open_uri  # see winnow.shared.access
from winnow.shared import config
from . import sibling
if True:
    from winnow.services.downloader import stage; from winnow.shared import bus
    from winnow.shared.triton import (
        client,  # winnow.services.blur
    )
patch("winnow.shared.storage.open_uri")
command = [sys.executable, "-m", "winnow.services.trainer.train"]
message = "docker-compose.yml: services.safety.environment: missing"
path = f"services.{name}.environment"
attribute = "services.dedup.command"
factory = "winnow.shared.models.clip:OpenClipEncoder"
exported = "winnow.services.evaluator.is_eval_holdout"
kept = "shared.storage"  # namespace-imports: skip
generated = "winnow.protos.winnow.v1.curation_pb2"
unrelated = self.services.safety
'''


def test_python_is_rewritten_and_a_second_run_changes_nothing(tmp_path):
    source = tmp_path / "sample.py"
    source.write_text(BEFORE)
    new, changes, manual = namespace_imports.rewrite_file(source)
    assert new == AFTER
    assert manual == []
    source.write_text(new)
    assert namespace_imports.rewrite_file(source) == (AFTER, [], [])


def test_an_unaliased_dotted_import_is_left_for_a_person(tmp_path):
    source = tmp_path / "sample.py"
    source.write_text("import shared.storage\nshared.storage.open_uri('x')\n")
    new, changes, manual = namespace_imports.rewrite_file(source)
    assert new == source.read_text() and changes == []
    assert "from winnow.shared import storage" in manual[0]


def test_text_files_are_rewritten(tmp_path):
    readme = tmp_path / "notes.md"
    readme.write_text("Run `python -m services.safety` (see shared.models.registry.) or winnow.shared.shards.\n")
    new, _, _ = namespace_imports.rewrite_file(readme)
    assert new == ("Run `python -m winnow.services.safety` (see winnow.shared.models.registry.) "
                   "or winnow.shared.shards.\n")


def test_the_repository_needs_no_rewriting():
    assert namespace_imports.main(["--check"]) == 0
