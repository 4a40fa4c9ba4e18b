"""The Dockerfiles' offline checks catch real mistakes; the CPU image keeps the lock's versions."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from winnow.ops.deploy import dockerfiles
from winnow.ops.deploy.dockerfiles import DockerIgnore, check, image_pin_problem

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("lock_variant", REPO / "docker" / "lock_variant.py")
lock_variant = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock_variant)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of what the Dockerfile checks read: docker/, .dockerignore, and the COPY sources."""
    shutil.copytree(REPO / "docker", tmp_path / "docker")
    shutil.copy(REPO / ".dockerignore", tmp_path / ".dockerignore")
    for name in ("requirements.lock", "requirements-nodeps.txt", "pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    for name in ("protos", "shared", "services", "winnow"):
        (tmp_path / name).symlink_to(REPO / name, target_is_directory=True)
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_the_committed_dockerfiles_pass():
    assert check(REPO) == []


def test_the_copy_of_the_tree_passes(tree):
    assert check(tree) == []


@pytest.mark.parametrize("image, reason", [
    ("python:latest", "moving tag 'latest'"),
    ("python", "untagged"),
    ("nvcr.io/nvidia/tritonserver", "untagged"),
    ("python:slim", "not an exact version"),
    ("localhost:5000/winnow", "untagged"),
])
def test_unpinned_images_are_named(image, reason):
    assert reason in image_pin_problem(image)


@pytest.mark.parametrize("image", ["python:3.11.13-slim-bookworm", "nvcr.io/nvidia/tritonserver:24.10-py3",
                                   "ghcr.io/astral-sh/uv:0.13.9", "python@sha256:" + "0" * 64])
def test_pinned_images_pass(image):
    assert image_pin_problem(image) is None


def test_an_unpinned_from_is_reported(tree):
    _edit(tree / "docker/Dockerfile", "FROM python:3.11.13-slim-bookworm AS python", "FROM python:latest AS python")
    _edit(tree / "docker/triton.Dockerfile", "FROM nvcr.io/nvidia/tritonserver:24.10-py3 AS triton",
          "FROM nvcr.io/nvidia/tritonserver AS triton")
    problems = check(tree)
    assert any(p.startswith("docker/Dockerfile:") and "FROM 'python:latest' uses the moving tag" in p for p in problems)
    assert any(p.startswith("docker/triton.Dockerfile:") and "is untagged" in p for p in problems)


def test_an_unpinned_copy_from_image_is_reported(tree):
    _edit(tree / "docker/Dockerfile", "COPY --from=uv /uv", "COPY --from=ghcr.io/astral-sh/uv:latest /uv")
    assert any("COPY --from='ghcr.io/astral-sh/uv:latest' uses the moving tag" in p for p in check(tree))


def test_a_root_user_is_reported(tree):
    _edit(tree / "docker/Dockerfile", "USER 10001:10001", "USER root")
    assert any("docker/Dockerfile:" in p and "USER root is root" in p for p in check(tree))


def test_a_missing_user_is_reported_through_the_stage_chain(tree):
    # the final stage builds on runtime-cpu, which builds on runtime: the USER there is what counts
    _edit(tree / "docker/Dockerfile", "USER 10001:10001\n", "")
    assert "docker/Dockerfile: the image runs as root (no USER in its final stage or the stages it builds on)" \
        in check(tree)
    _edit(tree / "docker/triton.Dockerfile", "USER 10001:10001\n", "USER 0\n")
    assert any("docker/triton.Dockerfile:" in p and "USER 0 is root" in p for p in check(tree))


def test_a_missing_healthcheck_is_reported(tree):
    text = (tree / "docker/triton.Dockerfile").read_text()
    (tree / "docker/triton.Dockerfile").write_text(re.sub(r"HEALTHCHECK .*?\)\"\]\n", "", text, flags=re.S))
    assert "docker/triton.Dockerfile: no HEALTHCHECK in the image" in check(tree)


def test_a_copy_source_that_does_not_exist_is_reported(tree):
    _edit(tree / "docker/Dockerfile", "COPY services ./services", "COPY services ./services\nCOPY configs ./configs")
    assert any("COPY source configs does not exist" in p for p in check(tree))


def test_a_copy_source_the_dockerignore_excludes_is_reported(tree):
    _edit(tree / ".dockerignore", "!services/\n", "")
    assert any("docker/Dockerfile:" in p and "COPY source services is excluded by .dockerignore" in p
               for p in check(tree))


def test_a_dockerignore_that_lets_the_venv_through_is_reported(tree):
    (tree / ".dockerignore").write_text("**/__pycache__\n")
    problems = check(tree)
    assert ".dockerignore: .venv is sent to the builder" in problems
    assert ".dockerignore: protos/winnow/v1/downloader_pb2.py is sent to the builder" in problems


def test_dockerignore_matching_follows_docker():
    ignore = DockerIgnore("*\n!shared/\n**/__pycache__\nprotos/**/*_pb2.py\n!docker/keep.py\n")
    assert ignore.excluded("tests/conftest.py")
    assert not ignore.excluded("shared/service/health_probe.py")
    assert ignore.excluded("shared/service/__pycache__/x.pyc")  # a parent directory matches
    assert not ignore.excluded("docker/keep.py") and ignore.excluded("docker/Dockerfile")
    assert DockerIgnore("protos/**/*_pb2.py").excluded("protos/winnow/v1/shard_pb2.py")
    assert not DockerIgnore("protos/**/*_pb2.py").excluded("protos/winnow/v1/shard.proto")


def test_continuation_lines_and_comments_inside_them_parse():
    text = "FROM python:3.11.13-slim AS a\nRUN one \\\n  # a comment\n  two\nUSER 1:1\n"
    instructions = dockerfiles.parse_instructions(text)
    assert [(i.keyword, i.arguments, i.line) for i in instructions] == [
        ("FROM", "python:3.11.13-slim AS a", 1), ("RUN", "one two", 2), ("USER", "1:1", 5)]


# --- the CPU image's requirements (docker/lock_variant.py) ----------------------------------------

def test_the_cpu_variant_keeps_every_version_of_the_lock_but_the_cuda_runtime():
    lock = (REPO / "requirements.lock").read_text()
    base, torch = lock_variant.split(lock, "cpu")
    pins = dict(re.findall(r"^([a-z0-9._-]+)==(\S+)", lock, re.M))
    cpu_pins = dict(re.findall(r"^([a-z0-9._-]+)==(\S+)", base, re.M))
    dropped = set(pins) - set(cpu_pins)
    assert {"torch", "torchvision"} <= dropped
    assert all(re.match(r"nvidia-|cuda-|triton$|torch$|torchvision$", name) for name in dropped), dropped
    assert any(name.startswith("nvidia-") for name in dropped)
    assert all(cpu_pins[name] == pins[name] for name in cpu_pins)  # nothing else moves
    assert {"sympy", "networkx", "filelock", "tritonclient"} <= set(cpu_pins)  # torch's own deps stay
    assert torch.split() == [f"torch=={pins['torch']}+cpu", f"torchvision=={pins['torchvision']}+cpu"]


def test_the_cuda_variant_is_the_lock_itself():
    lock = (REPO / "requirements.lock").read_text()
    assert lock_variant.split(lock, "cuda") == (lock, "")


def test_a_cuda_package_something_else_needs_is_not_dropped():
    lock = ("numpy==2.0.0\n    # via winnow (pyproject.toml)\n"
            "nvidia-cublas==13.0\n    # via\n    #   cupy\n    #   torch\n"
            "cupy==13.0\n    # via winnow (pyproject.toml)\n"
            "torch==2.15.0\n    # via winnow (pyproject.toml)\n"
            "torchvision==0.29.2\n    # via winnow (pyproject.toml)\n")
    with pytest.raises(lock_variant.LockError, match="nvidia-cublas would be dropped"):
        lock_variant.split(lock, "cpu")


def test_the_script_runs_as_the_image_runs_it(tmp_path):
    base, torch = tmp_path / "base.txt", tmp_path / "torch.txt"
    result = subprocess.run([sys.executable, str(REPO / "docker/lock_variant.py"), "cpu",
                             str(REPO / "requirements.lock"), str(base), str(torch)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "torch==" in torch.read_text() and not re.search(r"^(nvidia-|torch==)", base.read_text(), re.M)
    bad = subprocess.run([sys.executable, str(REPO / "docker/lock_variant.py"), "gpu",
                          str(REPO / "requirements.lock"), str(base), str(torch)], capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown variant 'gpu'" in bad.stderr


# --- the Triton image serves what the services ask for --------------------------------------------

def _build_arg(dockerfile: Path, name: str) -> str:
    for instruction in dockerfiles.parse_instructions(dockerfile.read_text()):
        key, _, default = instruction.arguments.partition("=")
        if instruction.keyword == "ARG" and key == name:
            return default.strip('"')
    raise AssertionError(f"{dockerfile} has no ARG {name}")


def test_the_triton_image_serves_the_models_the_services_call_by_default():
    from winnow.services.embed.__main__ import EmbedSettings
    from winnow.services.embed.options import DATACOMP_CLIP_MODELS
    from winnow.shared.curation_settings import CurationSettings
    from winnow.shared.models.registry import all_presets

    dockerfile = REPO / "docker/triton.Dockerfile"
    preset = _build_arg(dockerfile, "MODEL_PRESET")
    assert preset == CurationSettings.model_fields["model_preset"].default
    assert {p.kind for p in all_presets() if p.preset == preset} >= {"text_toxicity", "image_nsfw", "face_detector",
                                                                      "near_duplicate"}
    served = dict(model.split("=", 1) for model in _build_arg(dockerfile, "CLIP_MODELS").split())
    embed_default = EmbedSettings.model_fields["clip_models"].default_factory()
    assert embed_default == DATACOMP_CLIP_MODELS
    assert served == {key: f"{spec['arch']}:{spec['pretrained']}" for key, spec in embed_default.items()}


def test_the_triton_image_runs_the_release_the_tests_run():
    from winnow.ops.triton.server import WHEEL_VERSION

    dockerfile = (REPO / "docker/triton.Dockerfile").read_text()
    assert _build_arg(REPO / "docker/triton.Dockerfile", "PYTRITON_VERSION") == WHEEL_VERSION
    # nvidia-pytriton 0.7.0 bundles Triton 2.51.0, the server of container release 24.10
    assert WHEEL_VERSION == "0.7.0" and "FROM nvcr.io/nvidia/tritonserver:24.10-py3" in dockerfile
