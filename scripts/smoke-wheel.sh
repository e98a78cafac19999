#!/usr/bin/env bash
# make smoke-wheel: test what users install, not the checkout.
#
# Builds the wheel from a copy of the tracked files, installs it with no extras into a new venv
# outside the repository, runs `pip check`, then -- from another working directory, with
# nothing on PYTHONPATH -- runs the documented workflow against a real Valkey 9.1 server and
# checks every exit code:
#   validate (0) -> plan text (2 with --detailed-exitcode) / markdown / json --out (0)
#   -> apply the saved plan (0) -> a refused write -> denials (2) -> plan --detailed-exitcode (0) -> drift (0)
#   -> a user changed behind our back -> drift (2) -> import (0)
#   -> a broken file: validate exits 1 with one FILE:LINE line, no traceback.
# Valkey 9.1 is Debian sid's build from .cache/servers/sid (scripts/setup-servers.sh), run
# through sid's own dynamic loader as tests/servers.py does.
# KEEP=1 leaves the temporary directory for inspection.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
SID="$ROOT/.cache/servers/sid"
TMP=$(mktemp -d -t reconciler-smoke.XXXXXX)
SERVER_PID=""
started=$SECONDS

say() { echo "smoke-wheel: $*" >&2; }
fail() { say "FAIL: $*"; exit 1; }

cleanup() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ ${KEEP:-} == 1 ]]; then say "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

# 1. Build the wheel from a copy of the tracked (and new, not ignored) files: an in-tree build
#    would reuse build/, where files deleted from the source can linger and end up in the wheel.
mkdir -p "$TMP/src" "$TMP/dist"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [[ -e $f || -L $f ]] && printf '%s\0' "$f"; done | tar --null -T - -cf -) | tar -C "$TMP/src" -xf -
"$PY" -m pip wheel -q --no-deps --wheel-dir "$TMP/dist" "$TMP/src" > "$TMP/build.log" 2>&1 \
    || { tail -n 30 "$TMP/build.log" >&2; fail "building the wheel"; }
wheel=$(ls "$TMP"/dist/reconciler-*.whl)
say "built $(basename "$wheel")"
"$PY" -m zipfile -l "$wheel" | awk 'NR > 1 {print "  " $1}' >&2

# 2. A bare venv outside the repository; the wheel with no extras; pip check.
"$PY" -m venv "$TMP/venv"
VPY="$TMP/venv/bin/python"
"$VPY" -m pip install -q "$wheel" > "$TMP/install.log" 2>&1 \
    || { tail -n 30 "$TMP/install.log" >&2; fail "pip install of the wheel"; }
"$VPY" -m pip check >&2 || fail "pip check"

# 3. A real Valkey 9.1 on a free port, with a random admin token (sent only as its sha256).
[[ -e $SID/.complete ]] || "$ROOT/scripts/setup-servers.sh" >&2
loader=$(ls "$SID"/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$SID"/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 \
    "$SID"/lib64/ld-linux-x86-64.so.2 2>/dev/null | head -n 1) || true
[[ -n $loader && -e $SID/usr/bin/valkey-check-rdb ]] || fail "Valkey 9.1 not found in $SID (run scripts/setup-servers.sh)"
libs="$SID/usr/lib/x86_64-linux-gnu:$SID/lib/x86_64-linux-gnu"
port=$("$VPY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$TMP/server"
"$loader" --library-path "$libs" --argv0 valkey-server "$SID/usr/bin/valkey-check-rdb" \
    --bind 127.0.0.1 --port "$port" --dir "$TMP/server" --save "" --appendonly no \
    --daemonize no --logfile "$TMP/server/valkey.log" &
SERVER_PID=$!

token() { "$VPY" -c 'import secrets; print(secrets.token_urlsafe(24))'; }
export SMOKE_NODE="127.0.0.1:$port" SMOKE_ADMIN_TOKEN SMOKE_ORDERS_TOKEN SMOKE_REPORTS_TOKEN
SMOKE_ADMIN_TOKEN=$(token) SMOKE_ORDERS_TOKEN=$(token) SMOKE_REPORTS_TOKEN=$(token)

# Talks to the server directly (the venv's redis-py, a dependency of the wheel): bootstrap the
# admin, then check what apply did and change a user behind the reconciler's back.
valkey() {
    "$VPY" - "$@" <<'EOF'
import hashlib, os, sys, time
import redis
host, port = os.environ["SMOKE_NODE"].rsplit(":", 1)
what = sys.argv[1]
if what == "bootstrap":
    deadline = time.monotonic() + 15
    while True:
        try:
            r = redis.Redis(host=host, port=int(port), socket_timeout=2)
            version = r.info("server")["valkey_version"]
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                sys.exit("valkey did not answer PING")
            time.sleep(0.05)
    if not version.startswith("9.1."):
        sys.exit(f"expected Valkey 9.1, got {version}")
    digest = hashlib.sha256(os.environ["SMOKE_ADMIN_TOKEN"].encode()).hexdigest()
    r.execute_command("ACL", "SETUSER", "default", "on", "resetpass", "#" + digest)
    print(f"Valkey {version} on {os.environ['SMOKE_NODE']}")
elif what == "login":  # the applied token logs in and the rules hold
    r = redis.Redis(host=host, port=int(port), username="app-orders", password=os.environ["SMOKE_ORDERS_TOKEN"])
    r.set("orders:1", "x")
    try:
        r.set("other", "x")
        sys.exit("app-orders wrote outside orders:*")
    except redis.exceptions.NoPermissionError:
        pass
elif what == "tamper":  # drift: someone widens a user by hand
    r = redis.Redis(host=host, port=int(port), password=os.environ["SMOKE_ADMIN_TOKEN"])
    r.execute_command("ACL", "SETUSER", "app-reports", "+flushall")
EOF
}
say "$(valkey bootstrap)" || fail "starting Valkey 9.1 (log: $TMP/server/valkey.log)"

# 4. The workflow, from a directory outside the repository, with only the venv on PATH.
WORK="$TMP/work"
mkdir -p "$WORK"
cat > "$WORK/access.yaml" <<'EOF'
version: 1
instances:
  main:
    nodes: [{env: SMOKE_NODE}]
    admin: {username: default, secret: {env: SMOKE_ADMIN_TOKEN}}
    persist: none
roles:
  reader: "~* +@read -@dangerous"
users:
  app-orders:
    acl: "~orders:* +@read +@write -@dangerous"
    tokens:
      - {id: 2026-11, secret: {env: SMOKE_ORDERS_TOKEN}}
  app-reports:
    roles: [reader]
    tokens:
      - {id: 2026-10, secret: {env: SMOKE_REPORTS_TOKEN}}
EOF
printf 'version: 1\ninstances:\n  main:\n    nodes: [nowhere]\n' > "$WORK/broken.yaml"

cd "$WORK"
export PATH="$TMP/venv/bin:$PATH"
unset PYTHONPATH PYTHONHOME
export NO_COLOR=1 RECONCILER_NO_CACHE=1

# expect CODE NAME CMD...: run CMD, keep its output in $WORK/NAME.out, check the exit code.
expect() {
    local want=$1 name=$2 got=0
    shift 2
    "$@" > "$WORK/$name.out" 2> "$WORK/$name.err" || got=$?
    if [[ $got != "$want" ]]; then
        cat "$WORK/$name.out" "$WORK/$name.err" >&2
        fail "$* exited $got, expected $want"
    fi
    if grep -q Traceback "$WORK/$name.err"; then cat "$WORK/$name.err" >&2; fail "$*: traceback"; fi
    say "ok ($got): $*"
}

where=$(python -c 'import reconciler, os; print(os.path.dirname(reconciler.__file__))')
[[ $where == "$TMP/venv/"* ]] || fail "reconciler imported from $where, not the venv"
version=$(python -c 'import importlib.metadata as m; print(m.version("reconciler"))')
expect 0 version reconciler --version
grep -qx "reconciler $version" version.out || fail "--version printed '$(cat version.out)', expected 'reconciler $version'"
expect 0 module python -m reconciler --version
expect 0 schema reconciler schema
python -c 'import json, sys; d = json.load(open("schema.out")); sys.exit(d.get("title") is None)' || fail "schema is not the JSON Schema"
expect 0 schema-md reconciler schema --markdown
grep -q '^| `users` |' schema-md.out || fail "schema --markdown lacks the users row"

expect 0 validate reconciler validate -f access.yaml
expect 1 broken reconciler validate -f broken.yaml
grep -q '^broken.yaml:4: ' broken.err || fail "broken file: expected 'broken.yaml:4: ...', got '$(cat broken.err)'"
expect 2 plan-text reconciler plan -f access.yaml --detailed-exitcode
grep -q 'app-orders' plan-text.out || fail "text plan does not name app-orders"
expect 0 plan-markdown reconciler plan -f access.yaml --format markdown
grep -q '^| main |' plan-markdown.out || fail "markdown plan has no summary row for main"
expect 0 plan-json reconciler plan -f access.yaml --format json --out plan.json
python -c 'import json; json.load(open("plan-json.out")); json.load(open("plan.json"))' || fail "plan JSON does not parse"
if grep -qF "$SMOKE_ORDERS_TOKEN" plan.json plan-*.out; then fail "a token appears in a plan"; fi
expect 0 apply reconciler apply plan.json --auto-approve
valkey login || fail "app-orders cannot log in with its token, or its rules are wrong"
expect 2 denials reconciler denials -f access.yaml --format markdown
grep -q "key other" denials.out || fail "denials does not show the write app-orders was refused"
expect 0 noop reconciler plan -f access.yaml --detailed-exitcode
expect 0 drift-clean reconciler drift -f access.yaml
valkey tamper
expect 2 drift reconciler drift -f access.yaml --format json
python -c 'import json; d = json.load(open("drift.out")); assert d["drift"]["status"] == "drift", d["drift"]' \
    || fail "drift JSON does not report drift"
expect 0 import reconciler import --instance main -f access.yaml
python -c 'import sys, yaml; u = yaml.safe_load(open("import.out"))["users"]; sys.exit(not {"app-orders", "app-reports"} <= set(u))' \
    || fail "import output lacks the applied users"

say "passed in $((SECONDS - started)) s"
