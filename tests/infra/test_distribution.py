"""The installed distribution claims one import name, ``winnow`` (setup.py maps the folders under it).

The wheel is built from a copy of the sources with setuptools' own PEP 517 hook (offline: the
build needs nothing but the setuptools this environment has), installed into a fresh virtual
environment, and imported there; the editable install of the checkout maps the same names onto
the checkout's folders; and ``python -m services.<name>`` from the checkout's root imports every
real module once, under its ``winnow`` name.
"""

from __future__ import annotations

import configparser
import importlib.util
import json
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from winnow.ops.topology import SERVICES
from tests.infra.tools import find_uv

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "winnow", "shared", "services", "protos")
#: the old top-level names: folders of the repository, never installed under these names
BARE = ("shared", "services", "protos")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of what docker/Dockerfile copies into the image."""
    tree = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(source, tree / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_wheel({str(out)!r})"],
                   cwd=tree, check=True, capture_output=True, timeout=120)
    (built,) = out.glob("winnow-*.whl")
    return built


def test_the_wheel_has_one_top_level_name(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n for n in names if n.endswith(".dist-info/RECORD")).rsplit("/", 1)[0]
        top_level = archive.read(f"{info}/top_level.txt").decode().split()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert top_level == ["winnow"]
    assert {name.split("/")[0] for name in names} == {"winnow", info}
    # the folders are there, under winnow, with their data files
    for path in ("winnow/cli.py", "winnow/shared/shards.py", "winnow/services/downloader/__main__.py",
                 "winnow/protos/winnow/v1/shard.proto", "winnow/shared/models/presets.json",
                 "winnow/services/evaluator/tasks.json", "winnow/services/trainer/scales.json"):
        assert path in names
    scripts = configparser.ConfigParser()
    scripts.read_string(entry_points)
    assert all(target.startswith("winnow.") for target in scripts["console_scripts"].values())


def test_the_installed_wheel_imports_under_winnow_only(wheel, tmp_path):
    uv = find_uv()
    if uv is None:
        pytest.skip("uv is not installed (scripts/setup.sh installs it)")
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    subprocess.run([uv, "pip", "install", "--quiet", "--offline", "--no-deps", "--python", str(python), str(wheel)],
                   check=True, timeout=120)
    # the dependencies come from this environment, after the fresh one's site-packages (a .pth
    # line appends its folder); this environment's own editable finder is not loaded from there
    (purelib,) = (venv / "lib").glob("python3*/site-packages")
    (purelib / "test-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    script = f"""
import importlib, importlib.util, json
found = {{}}
for name in ("winnow.shared.shards", "winnow.shared.storage", "winnow.services.downloader.stage",
             "winnow.shared.proto", "winnow.ops.topology"):
    found[name] = importlib.import_module(name).__file__
found["bare"] = [n for n in {list(BARE)!r} if importlib.util.find_spec(n) is not None]
print(json.dumps(found))
"""
    done = subprocess.run([str(python), "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert found.pop("bare") == []
    assert all(path.startswith(str(purelib / "winnow")) for path in found.values()), found
    # winnow.shared.proto generated the protobuf code in place, and its imports resolve there
    assert (purelib / "winnow" / "protos" / "winnow" / "v1" / "extractor_pb2.py").is_file()


def test_the_editable_install_maps_the_checkout():
    for name, folder in (("winnow.shared.storage", "shared"), ("winnow.services.safety", "services"),
                         ("winnow.protos", "protos"), ("winnow.ops", "winnow")):
        spec = importlib.util.find_spec(name)
        assert spec is not None and Path(spec.origin).is_relative_to(REPO / folder), (name, spec)


def test_the_bare_names_exist_only_in_the_checkout(tmp_path):
    script = "import importlib.util; print([n for n in %r if importlib.util.find_spec(n)])" % (BARE,)
    elsewhere = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                               timeout=60, check=True)
    assert elsewhere.stdout.strip() == "[]"


def test_python_m_services_from_the_checkout_imports_each_module_once():
    """``python -m services.<name>`` from the repository root: the bare names hold only packages.

    Python imports ``services/__init__.py`` and ``services/<name>/__init__.py`` as ``services``
    and ``services.<name>`` and runs ``__main__.py``, whose imports all say ``winnow.``: a module
    with state (settings, Prometheus metrics) must never be loaded under a bare name too.
    """
    script = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name.removeprefix("winnow.") + ".__main__")
bare = sorted(n for n, m in sys.modules.items() if n.split(".")[0] in ("shared", "services", "protos")
              and not (getattr(m, "__file__", "") or "").endswith(("__init__.py", "__main__.py")))
print(json.dumps(bare))
"""
    modules = [svc.module for svc in SERVICES if svc.name in ("downloader", "safety", "evaluator")]
    done = subprocess.run([sys.executable, "-c", script, *modules], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []
