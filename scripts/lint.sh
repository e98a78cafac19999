#!/usr/bin/env bash
# make lint: ruff (pyflakes, pycodestyle, import order, bugbear) on the code, scripts, tests and
# benchmarks, and mypy on reconciler/. Configuration lives in pyproject.toml.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VENV="$ROOT/.venv"
EXTRAS="test,embedded"

SCRIPT=lint.sh
# shellcheck source=scripts/venv.sh
source "$ROOT/scripts/venv.sh"

ensure_venv
"$VENV/bin/ruff" check reconciler scripts tests bench
"$VENV/bin/mypy"
echo "lint.sh: ruff and mypy clean"
