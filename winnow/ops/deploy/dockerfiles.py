"""Offline checks of the hand-written Dockerfiles and ``.dockerignore`` (no Docker engine needed).

For each Dockerfile under ``docker/``:

- every ``FROM`` (and ``COPY --from=IMAGE``) names an earlier stage or a pinned image: a digest,
  or a version tag (not ``latest`` or another moving name, not untagged);
- the image that is built (the last stage, following its chain of stages) runs as a non-root
  ``USER`` and declares a ``HEALTHCHECK``;
- every ``COPY``/``ADD`` source from the build context exists in the repository and is not
  excluded by ``.dockerignore`` (Docker would fail, or silently copy less).

``ARG`` defaults declared before the first ``FROM`` are substituted into ``FROM`` lines, as
Docker does for a build without ``--build-arg``.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

DOCKERFILES = (Path("docker/Dockerfile"), Path("docker/triton.Dockerfile"))
DOCKERIGNORE = Path(".dockerignore")
#: tags that move: an image named by one of these is not pinned
MOVING_TAGS = {"latest", "stable", "edge", "nightly", "main", "master", "dev", "devel", "rolling", "current"}
_VERSION = re.compile(r"\d+\.\d+")
_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its keyword, its arguments as written, and its first line."""

    keyword: str
    arguments: str
    line: int


@dataclass
class Stage:
    """A ``FROM`` and the instructions under it."""

    base: str
    name: str
    line: int
    instructions: list[Instruction] = field(default_factory=list)


def parse_instructions(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments and parser directives dropped."""
    instructions: list[Instruction] = []
    pending, first_line = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if not pending:
            first_line = number
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        whole = (pending + stripped).strip()
        pending = ""
        keyword, _, arguments = whole.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), first_line))
    if pending:
        keyword, _, arguments = pending.strip().partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), first_line))
    return instructions


def _words(arguments: str) -> list[str]:
    if arguments.startswith("["):
        try:
            return [str(word) for word in json.loads(arguments)]
        except json.JSONDecodeError:
            pass
    return shlex.split(arguments)


def _flags(words: list[str]) -> tuple[dict[str, str], list[str]]:
    flags, rest = {}, []
    for word in words:
        if word.startswith("--") and not rest:
            key, _, value = word[2:].partition("=")
            flags[key] = value
        else:
            rest.append(word)
    return flags, rest


def parse_stages(instructions: list[Instruction]) -> tuple[dict[str, str], list[Stage]]:
    """The global ``ARG`` defaults and the stages, in order."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            _, words = _flags(_words(instruction.arguments))
            base = _substitute(words[0], global_args) if words else ""
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else ""
            stages.append(Stage(base, name, instruction.line))
        elif not stages:
            if instruction.keyword == "ARG":
                key, _, default = instruction.arguments.partition("=")
                global_args[key.strip()] = default.strip().strip('"')
        else:
            stages[-1].instructions.append(instruction)
    return global_args, stages


def _substitute(text: str, variables: dict[str, str]) -> str:
    return _VARIABLE.sub(lambda match: variables.get(match.group(1), ""), text)


def image_pin_problem(image: str) -> str | None:
    """Why ``image`` is not pinned, or None when it is (a digest, or a version tag that does not move)."""
    if "@sha256:" in image:
        return None
    last_component = image.rsplit("/", 1)[-1]
    if ":" not in last_component:
        return f"{image!r} is untagged (pulls latest)"
    tag = last_component.rsplit(":", 1)[1]
    if tag.lower() in MOVING_TAGS:
        return f"{image!r} uses the moving tag {tag!r}"
    if not _VERSION.search(tag):
        return f"{image!r}: tag {tag!r} is not an exact version"
    return None


def _effective(stages: list[Stage], index: int, keyword: str) -> Instruction | None:
    """The last ``keyword`` instruction that applies to stage ``index``, following FROM <stage>."""
    names = {stage.name: i for i, stage in enumerate(stages) if stage.name}
    seen = set()
    while index is not None and index not in seen:
        seen.add(index)
        stage = stages[index]
        found = [i for i in stage.instructions if i.keyword == keyword]
        if found:
            return found[-1]
        parent = names.get(stage.base)
        index = parent if parent is not None and parent < index else None
    return None


def _is_root(user: str) -> bool:
    name = user.split(":", 1)[0].strip()
    return name in ("root", "0", "")


class DockerIgnore:
    """``.dockerignore`` as Docker reads it: the last matching pattern wins; ``!`` re-includes.

    A pattern matches a path or any of its parent directories (so ``*`` excludes everything and
    ``!shared/`` brings the folder back); ``**`` matches any number of directories.
    """

    def __init__(self, text: str) -> None:
        self.patterns: list[tuple[bool, re.Pattern]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            pattern = line[1:].strip() if negated else line
            pattern = pattern.strip("/").removeprefix("./")
            if pattern:
                self.patterns.append((negated, re.compile(_glob_to_regex(pattern))))

    def excluded(self, path: str) -> bool:
        parts = Path(path).parts
        candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        result = False
        for negated, pattern in self.patterns:
            if any(pattern.fullmatch(candidate) for candidate in candidates):
                result = not negated
        return result


def _glob_to_regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i)
            if end == -1:
                out.append(re.escape(pattern[i]))
                i += 1
            else:
                out.append(fnmatch.translate(pattern[i:end + 1]).removeprefix("(?s:").removesuffix(")\\Z"))
                i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def check_dockerfile(repo: Path, relative: Path, ignore: DockerIgnore) -> list[str]:
    """Problems with one Dockerfile (paths in messages relative to ``repo``)."""
    path = repo / relative
    if not path.is_file():
        return [f"{relative}: missing"]
    _, stages = parse_stages(parse_instructions(path.read_text()))
    if not stages:
        return [f"{relative}: no FROM"]
    problems = []
    stage_names = set()
    for stage in stages:
        if stage.base not in stage_names and stage.base != "scratch":
            problem = image_pin_problem(stage.base)
            if problem:
                problems.append(f"{relative}:{stage.line}: FROM {problem}")
        for instruction in stage.instructions:
            if instruction.keyword in ("COPY", "ADD"):
                problems += _check_copy(repo, relative, instruction, stage_names, ignore)
        if stage.name:
            stage_names.add(stage.name)
    final = len(stages) - 1
    user = _effective(stages, final, "USER")
    if user is None:
        problems.append(f"{relative}: the image runs as root (no USER in its final stage or the stages it builds on)")
    elif _is_root(user.arguments):
        problems.append(f"{relative}:{user.line}: USER {user.arguments} is root")
    healthcheck = _effective(stages, final, "HEALTHCHECK")
    if healthcheck is None or healthcheck.arguments.strip().upper() == "NONE":
        problems.append(f"{relative}: no HEALTHCHECK in the image")
    return problems


def _check_copy(repo: Path, relative: Path, instruction: Instruction, stage_names: set[str],
                ignore: DockerIgnore) -> list[str]:
    flags, words = _flags(_words(instruction.arguments))
    source_stage = flags.get("from")
    if source_stage is not None:
        if source_stage in stage_names or source_stage.isdigit():
            return []
        problem = image_pin_problem(source_stage)
        return [f"{relative}:{instruction.line}: COPY --from={problem}"] if problem else []
    problems = []
    for source in words[:-1]:
        if "://" in source:  # ADD of a URL
            continue
        clean = source.removeprefix("./").rstrip("/") or "."
        matches = sorted(repo.glob(clean)) if any(c in clean for c in "*?[") else [repo / clean]
        if not any(match.exists() for match in matches):
            problems.append(f"{relative}:{instruction.line}: {instruction.keyword} source {source} does not exist")
        elif clean != "." and ignore.excluded(clean):
            problems.append(f"{relative}:{instruction.line}: {instruction.keyword} source {source} "
                            f"is excluded by {DOCKERIGNORE}")
    return problems


def check(repo: Path) -> list[str]:
    """Problems with every Dockerfile of the project and its ``.dockerignore``."""
    ignore_file = repo / DOCKERIGNORE
    if not ignore_file.is_file():
        return [f"{DOCKERIGNORE}: missing (the whole checkout, .venv included, would be sent to the builder)"]
    ignore = DockerIgnore(ignore_file.read_text())
    problems = []
    for relative in DOCKERFILES:
        problems += check_dockerfile(repo, relative, ignore)
    for never in (".venv", ".git", "tests", "protos/winnow/v1/downloader_pb2.py"):
        if not ignore.excluded(never):
            problems.append(f"{DOCKERIGNORE}: {never} is sent to the builder")
    return problems
