#!/usr/bin/env bash
# Set up everything the tests need, then run them all (pass pytest options through, e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
.venv/bin/python -m winnow.shared.protogen --check
.venv/bin/python scripts/lint_imports.py --no-cache   # the layering contracts in pyproject.toml
exec .venv/bin/python -m pytest "$@"
