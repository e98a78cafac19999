#!/usr/bin/env bash
# make docs: regenerate docs/yaml-reference.md from schemas/desired-state.schema.json
# (`reconciler schema --markdown`; the generator uses only the standard library, so it runs
# from the source tree without a venv). tests/test_docs.py fails when the two disagree.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=python3
[[ -x .venv/bin/python ]] && PY=.venv/bin/python
out=$(mktemp)
trap 'rm -f "$out"' EXIT
PYTHONPATH="$ROOT" "$PY" -m reconciler schema --markdown > "$out"
mkdir -p docs
cp "$out" docs/yaml-reference.md
echo "gen-docs.sh: wrote docs/yaml-reference.md"
