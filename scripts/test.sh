#!/usr/bin/env bash
# Set up everything the tests need, then run them all (pass pytest options through, e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
# setup.sh installs uv with `pip --user` where none was on PATH; the img2dataset parity tests
# build img2dataset's own virtualenv with it, and skip where they cannot find it.
export PATH="$PATH:$HOME/.local/bin"
.venv/bin/python -m winnow.shared.protogen --check
.venv/bin/python scripts/lint_imports.py --no-cache   # the layering contracts in pyproject.toml
exec .venv/bin/python -m pytest "$@"
