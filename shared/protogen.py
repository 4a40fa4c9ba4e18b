"""Generate the Python code for ``protos/`` (messages and gRPC stubs), reproducibly.

Generated files live next to their ``.proto`` sources and are never committed. A stamp file
(``protos/winnow/.generated.json``) records the hash of every source and every generated file,
so that importing ``winnow.shared.proto`` can tell generated code that is missing (generate it),
stale (a ``.proto`` changed) or hand-edited (a generated file changed).

    python -m winnow.shared.protogen           # (re)generate
    python -m winnow.shared.protogen --check   # exit 1 if the generated code is stale or edited

protoc writes a generated module's import of another one after the ``.proto`` import path, as
an absolute import from the top-level package ``protos``; but ``protos/`` is installed as
``winnow.protos`` (see setup.py). Those imports are rewritten as relative ones
(``from . import downloader_pb2``), which resolve wherever the package is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = REPO_ROOT / "protos"
STAMP = PROTO_DIR / "winnow" / ".generated.json"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


class GeneratedCodeError(RuntimeError):
    """The generated protobuf code does not match ``protos/``."""


def proto_sources() -> list[Path]:
    return sorted(PROTO_DIR.rglob("*.proto"))


def generated_files() -> list[Path]:
    return sorted(p for p in PROTO_DIR.rglob("*.py*") if p.name.endswith(GENERATED_SUFFIXES))


#: a generated module's import of another generated module, as protoc writes it
_GENERATED_IMPORT = re.compile(r"^from (protos(?:\.\w+)*) import ", re.MULTILINE)


def _relative_imports(path: Path) -> None:
    """Rewrite ``from protos.<package> import x_pb2`` in a generated file as a relative import."""
    here = path.parent.relative_to(REPO_ROOT).parts  # the file's package, e.g. protos/winnow/v1

    def relative(match: re.Match[str]) -> str:
        target = match.group(1).split(".")
        common = len(os.path.commonprefix([list(here), target]))
        dots = "." * (len(here) - common + 1)
        return f"from {dots}{'.'.join(target[common:])} import "

    text = path.read_text()
    if re.search(r"^import protos\b", text, re.MULTILINE):
        raise GeneratedCodeError(f"{path}: an absolute `import protos...` that cannot be made relative")
    path.write_text(_GENERATED_IMPORT.sub(relative, text))


def _digest(paths: list[Path]) -> dict[str, str]:
    return {str(p.relative_to(REPO_ROOT)): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def generate() -> None:
    """Run protoc (from grpcio-tools) over every ``.proto`` and write the stamp."""
    from grpc_tools import protoc
    import grpc_tools

    for stale in generated_files():
        stale.unlink()
    include = Path(grpc_tools.__file__).parent / "_proto"
    sources = [str(p.relative_to(REPO_ROOT)) for p in proto_sources()]
    args = [
        "grpc_tools.protoc",
        f"-I{REPO_ROOT}",
        f"-I{include}",
        f"--python_out={REPO_ROOT}",
        f"--pyi_out={REPO_ROOT}",
        f"--grpc_python_out={REPO_ROOT}",
        *sources,
    ]
    code = protoc.main(args)
    if code != 0:
        raise GeneratedCodeError(f"protoc failed with exit code {code} on {sources}")
    for path in generated_files():
        _relative_imports(path)
    STAMP.write_text(
        json.dumps({"sources": _digest(proto_sources()), "generated": _digest(generated_files())}, indent=1)
    )


def problems() -> list[str]:
    """What is wrong with the generated code now; empty when it is current and untouched."""
    if not STAMP.exists():
        return ["generated code is missing"]
    stamp = json.loads(STAMP.read_text())
    found = []
    if stamp.get("sources") != _digest(proto_sources()):
        found.append("generated code is stale: a .proto file changed since generation")
    if stamp.get("generated") != _digest(generated_files()):
        found.append("generated code was edited by hand or is incomplete")
    return found


def ensure_generated() -> None:
    """Generate when missing; refuse stale or hand-edited code with a clear error."""
    found = problems()
    if found == ["generated code is missing"]:
        generate()
    elif found:
        raise GeneratedCodeError("; ".join(found) + ". Run `python -m winnow.shared.protogen`.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if generated code is stale or edited")
    args = parser.parse_args(argv)
    if args.check:
        found = problems()
        for problem in found:
            print(f"protogen: {problem}", file=sys.stderr)
        if found:
            return 1
        # Regenerating must reproduce the very same bytes.
        before = _digest(generated_files())
        generate()
        if _digest(generated_files()) != before:
            print("protogen: generation is not reproducible", file=sys.stderr)
            return 1
        return 0
    generate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
