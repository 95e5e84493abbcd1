#!/usr/bin/env bash
# The whole test suite, from a fresh machine: system packages, venv, lint, types, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system-deps.sh
scripts/bootstrap.sh --dev
echo "== ruff"; .venv/bin/ruff check .
echo "== mypy (strict)"; .venv/bin/mypy
echo "== pytest"; exec .venv/bin/pytest "$@"
