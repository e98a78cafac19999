# Sourced by test.sh and demo.sh: ensure_venv creates .venv (Python >= 3.11) and installs
# `.[$EXTRAS]` into it, again only when pyproject.toml changed since the last install.
# Needs ROOT, VENV, EXTRAS; messages carry $SCRIPT.

ensure_venv() {
    local py=${PYTHON:-python3}
    if [[ ! -x $VENV/bin/python ]]; then
        "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
            || { echo "$SCRIPT: Python >= 3.11 required ($($py --version 2>&1))" >&2; exit 1; }
        if ! "$py" -m venv "$VENV"; then
            # Debian ships venv's ensurepip separately.
            if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
                rm -rf "$VENV"
                DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv >&2 \
                    || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv >&2; }
                "$py" -m venv "$VENV"
            else
                echo "$SCRIPT: '$py -m venv' failed; install python3-venv" >&2
                exit 1
            fi
        fi
    fi
    # An install with the test extra includes the embedded one.
    local full="$VENV/.installed-test-embedded"
    if [[ -e $full && ! pyproject.toml -nt $full ]]; then
        return
    fi
    local stamp="$VENV/.installed-${EXTRAS//,/-}"
    if [[ ! -e $stamp || pyproject.toml -nt $stamp ]]; then
        echo "$SCRIPT: installing .[$EXTRAS] into .venv" >&2
        if ! "$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]" > "$VENV/pip-install.log" 2>&1; then
            tail -n 30 "$VENV/pip-install.log" >&2
            echo "$SCRIPT: pip install failed (full log: .venv/pip-install.log)" >&2
            exit 1
        fi
        touch "$stamp"
    fi
}
