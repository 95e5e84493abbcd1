#!/usr/bin/env bash
# Create .venv (if missing) and install the project into it. `--dev` adds test and lint tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip 2>/dev/null || true
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extra}" 2>&1 \
  | grep -vE "^(WARNING: Location|  |!!|$)" || true
if [ "${1:-}" = "--dev" ]; then
  # The example plugin, installed like any third-party adapter: the tests find it through its entry points.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e examples/redis-adapter 2>&1 \
    | grep -vE "^(WARNING: Location|  |!!|$)" || true
  .venv/bin/python -c "import scaler_redis_adapter"
fi
.venv/bin/python -c "import scaler, adapters.api" # fail loudly if the install did not work
