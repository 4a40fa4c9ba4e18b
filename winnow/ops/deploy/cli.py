"""``winnow deploy render`` writes the deployment artifacts; ``winnow deploy check`` validates them.

Each target module (compose, kubernetes) exposes two functions:

- ``render(repo: Path) -> dict[Path, str]``: the files it generates from winnow/ops/topology.py,
  relative to the repository root;
- ``check(repo: Path) -> list[str]``: problems with the committed files (schema errors,
  policy violations); empty when they are valid.

``check`` also fails when a committed file differs from what ``render`` gives (drift).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from rich.console import Console

TARGETS = {"compose": "winnow.ops.deploy.compose", "kubernetes": "winnow.ops.deploy.kubernetes"}
REPO = Path(__file__).resolve().parents[3]


def _targets(names: list[str] | None):
    return {name: importlib.import_module(TARGETS[name]) for name in (names or TARGETS)}


def render_files(repo: Path = REPO, names: list[str] | None = None) -> dict[Path, str]:
    """Every generated file of the chosen targets, by path relative to ``repo``."""
    files: dict[Path, str] = {}
    for module in _targets(names).values():
        files.update(module.render(repo))
    return files


def drift(repo: Path = REPO, names: list[str] | None = None) -> list[str]:
    """Generated files that are missing or differ from what the topology gives."""
    problems = []
    for path, text in render_files(repo, names).items():
        on_disk = repo / path
        if not on_disk.is_file():
            problems.append(f"{path}: missing (run `winnow deploy render`)")
        elif on_disk.read_text() != text:
            problems.append(f"{path}: differs from the topology (run `winnow deploy render`)")
    return problems


def check(repo: Path = REPO, names: list[str] | None = None) -> list[str]:
    """Drift plus each target's own validation."""
    problems = drift(repo, names)
    for name, module in _targets(names).items():
        problems += [f"{name}: {problem}" for problem in module.check(repo)]
    return problems


def render_command(args: argparse.Namespace) -> int:
    files = render_files(REPO, args.targets)
    for path, text in sorted(files.items()):
        target = REPO / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file() or target.read_text() != text:
            target.write_text(text)
            Console().print(f"wrote {path}")
    return 0


def check_command(args: argparse.Namespace) -> int:
    console = Console()
    problems = check(REPO, args.targets)
    for problem in problems:
        console.print(f"[red]{problem}")
    if not problems:
        console.print(f"deployment artifacts valid: {', '.join(args.targets or TARGETS)}")
    return 1 if problems else 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("deploy", help="generate or validate docker-compose.yml and k8s/")
    commands = parser.add_subparsers(dest="deploy_command", required=True)
    for name, func, text in (("render", render_command, "write the artifacts from winnow/ops/topology.py"),
                             ("check", check_command, "validate the artifacts and check they match the topology")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("targets", nargs="*", choices=[*TARGETS, []], default=None,
                         help="compose, kubernetes (default: both)")
        sub.set_defaults(func=func)
