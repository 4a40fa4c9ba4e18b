#!/usr/bin/env python3
"""Check pyproject.toml's layering contracts (import-linter) on the package as it is installed.

lint-imports finds a root package by its import name and reads the files under that package's
folder. ``winnow.shared``, ``winnow.services`` and ``winnow.protos`` live in their own folders
(``shared/``, ``services/``, ``protos/``; setup.py maps them under ``winnow``): the editable
install imports them, but a walk of ``winnow/`` does not see them, and lint-imports run from the
repository root would check ``winnow/`` alone. So this lays the package out as the wheel does
(``setup.py build_py`` into a temporary folder, a copy of the sources) and runs lint-imports
there, with the repository's configuration; line numbers are the sources' own.

    python scripts/lint_imports.py                # what scripts/test.sh runs
    python scripts/lint_imports.py --verbose      # options go to lint-imports
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    with tempfile.TemporaryDirectory(prefix="winnow-lint-imports-") as tmp:
        build = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", tmp], cwd=ROOT,
                               capture_output=True, text=True)
        if build.returncode != 0 or not (Path(tmp) / "winnow" / "shared").is_dir():
            print(build.stdout + build.stderr, file=sys.stderr)
            print("lint_imports: setup.py build_py did not lay out the winnow package", file=sys.stderr)
            return 1
        # lint-imports puts its working directory first on sys.path: there, `winnow` is the copy
        return subprocess.run([str(lint_imports), *argv, str(ROOT / "pyproject.toml")],
                              cwd=tmp).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
