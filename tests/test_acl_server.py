"""The ACL engine against real servers of every version in the matrix.

For each rule string of the corpus: the engine's meaning equals the meaning of what the server
itself prints back (ACL LIST) for a user set with `reset resetchannels <rules>`; when the engine
says a version can't take a rule, the server refuses it too. rules_for() output set on the server
gives the same Permissions, and on 7.0+ the engine's verdicts match ACL DRYRUN.
"""

from __future__ import annotations

import json
import re

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import MATRIX, start_server

from reconciler.acl import (
    AclSyntaxError,
    CommandTable,
    UnsupportedRule,
    check,
    command_allowed,
    effective,
    parse,
    parse_acl_list_line,
    rules_for,
)
from reconciler.acl.table import raw_command

pytestmark = pytest.mark.server

CORPUS = [
    # categories, commands, order
    "+@all",
    "allcommands",
    "-@all",
    "nocommands",
    "",
    "+get",
    "+GET +Set",
    "+@read",
    "+@read -@dangerous +set -get",
    "+@all -@dangerous +flushdb",
    "-@all +@read -keys +set",
    "+@all -@dangerous",
    "+@write -flushall",
    "+@read +@write",
    "+@read -@read",
    "-@read +@read",
    "+get -get",
    "-get +get",
    "+@string -@write",
    "-@write +@string",
    "+set -@write +@string",
    "+@all -@admin +info",
    "+@admin -@dangerous",
    "+@dangerous -@admin",
    "+@fast -@write",
    "+@slow +@fast -@blocking",
    "+@keyspace -del -unlink",
    "+@hash +@set +@sortedset +@list",
    "+@stream -xadd",
    "+@pubsub",
    "+@scripting -eval",
    "+@transaction +@connection",
    "+@geo +@hyperloglog +@bitmap",
    "+@all -@keyspace -@read -@write",
    "+@all +@all -@all +get",
    "+get +get +get",
    "-@all -@all",
    "-@all +@read -@dangerous +keys",
    "+@all -@dangerous ~app:* &app:* +flushdb -flushall",
    "+@read -@dangerous +sort -sort_ro",
    # subcommands and first arguments
    "+config|get",
    "+config|get +config|set",
    "+config -config|set",
    "+@all -config|set -config|rewrite",
    "+client|id +client|setname",
    "+@admin -client|kill",
    "+select|0",
    "+select|0 +select|1",
    "+select|0 +select",
    "+select +select|0",
    "+select|0 -select",
    "+select|0 +@keyspace",
    "+select|0 +@connection",
    "+select|0 -@connection",
    "+@all -select +select|0",
    "+debug|object",
    "+acl|whoami +acl|cat",
    "+cluster|info",
    "-@all +config",
    "+config|GET",
    "+command|docs -command",
    "+command -command|docs",
    "+@all -command|docs",
    "+@connection -command|docs -command|getkeys",
    "+command|count +command|info",
    "+command -command|count -command|docs -command|getkeys -command|getkeysandflags -command|info -command|list",
    "+@slow -config|set",
    "-@all +@admin +config|get -config",
    "+client -client|kill +client|kill",
    "+@all -@dangerous +config|get",
    "+memory|usage",
    "+object|encoding +@read",
    "+@slow -config",
    "+config|nosuch",
    "+get|x|y",
    "-select|0",
    # keys
    "~*",
    "allkeys",
    "~a* ~b*",
    "~a* ~a*",
    "~a* resetkeys ~b*",
    "~* resetkeys",
    "%R~r:*",
    "%W~w:*",
    "%RW~rw:*",
    "%R~x %W~x",
    "%R~* ~*",
    "%R~* %W~*",
    "~a %R~a",
    "%R~* ~a:*",
    "allkeys resetkeys %R~logs:* +@read",
    "~foo:[abc]* ~bar:?",
    # channels
    "&*",
    "allchannels",
    "&news.*",
    "&a &b &a",
    "&* resetchannels &x",
    "resetchannels",
    "+@pubsub &chat:* ~*",
    # selectors
    "(~x +get)",
    "+@read ~* (~w:* +set) (%R~r:* +get)",
    "(~x +get) (~x +get)",
    "(~x +get) clearselectors",
    "(~x +get) clearselectors (~y +set)",
    "( ~a +@write -del )",
    "(+@all -@dangerous ~* &*)",
    "(&ch:* +publish)",
    "()",
    "+get (~a +set) ~b",
    "(+select|0 +config|get ~k)",
    # databases (Valkey 9)
    "db=0 +get ~*",
    "db=1,2 +@read",
    "resetdbs +get",
    "db=3 alldbs",
    "(db=5 ~x +get)",
    # identity rules are ignored, except that `reset` starts over
    "~a +@all reset ~b +get",
    "(~x +get) reset +set",
    "db=1 reset +get",
    "on nopass +get",
    "skip-sanitize-payload +get",
    # refused everywhere
    "+@raed",
    "+nosuchcmd",
    "~* ~x",
    "&* &x",
]


@pytest.fixture(scope="module", params=[pytest.param(m, id=m) for m in MATRIX])
def live(request, tmp_path_factory):
    srv = start_server(request.param, tmp_path_factory.mktemp(request.param))
    try:
        client = srv.admin()
        table = CommandTable.read(client, srv.server, srv.version)
        yield srv, client, table
    finally:
        srv.stop()


def _setuser_args(name: str, rules: str) -> list[str]:
    return ["ACL", "SETUSER", name, "reset", "resetchannels", *rules.split()]


def _apply(client, users: dict[str, str]) -> dict[str, Exception | None]:
    """Set every user in one pipeline; returns the server's error (or None) per user."""
    pipe = client.pipeline(transaction=False)
    for name, rules in users.items():
        pipe.execute_command(*_setuser_args(name, rules))
    replies = pipe.execute(raise_on_error=False)
    return {n: (r if isinstance(r, Exception) else None) for n, r in zip(users, replies, strict=False)}


def _live_rules(client) -> dict[str, str]:
    out = {}
    for line in client.execute_command("ACL", "LIST"):
        line = line.decode() if isinstance(line, bytes) else line
        name, _, _, _, perms = parse_acl_list_line(line)
        out[name] = perms
    return out


def _engine(rules: str, table: CommandTable):
    """The engine's verdict on desired rules: strict syntax, then meaning on this version."""
    try:
        parse(rules)
        return effective(rules, table)
    except (AclSyntaxError, UnsupportedRule) as e:
        return e


def _reset_users(client) -> None:
    users = [u.decode() if isinstance(u, bytes) else u for u in client.execute_command("ACL", "USERS")]
    others = [u for u in users if u != "default"]
    if others:
        client.execute_command("ACL", "DELUSER", *others)


def test_bundled_table_matches_server(live):
    srv, client, table = live
    bundled = CommandTable.bundled(table.name)
    assert bundled == table
    for opts in ({"decode_responses": False}, {"protocol": 3}):
        assert CommandTable.read(srv.client(**opts), srv.server, srv.version) == table, opts
    assert json.loads(json.dumps(table.to_json())) == bundled.to_json()
    assert CommandTable.nearest(srv.server, srv.version).name == table.name


def test_corpus_matches_server(live):
    srv, client, table = live
    assert len(CORPUS) >= 80
    _reset_users(client)
    users = {f"c{i}": rules for i, rules in enumerate(CORPUS)}
    errors = _apply(client, users)
    listed = _live_rules(client)
    failures = []
    for name, rules in users.items():
        mine = _engine(rules, table)
        refused = errors[name]
        if isinstance(mine, Exception):
            if refused is None:
                failures.append(f"{rules!r}: engine refuses ({mine}) but server accepted: {listed[name]!r}")
            continue
        if refused is not None:
            failures.append(f"{rules!r}: server refused ({refused}) but engine accepted")
            continue
        back = effective(listed[name], table)
        if back != mine:
            failures.append(f"{rules!r}: server prints {listed[name]!r}; engine {mine.root} != {back.root}")
    assert not failures, "\n".join(failures)


def test_rules_for_roundtrip(live):
    srv, client, table = live
    _reset_users(client)
    users = {}
    for i, rules in enumerate(CORPUS):
        try:
            users[f"r{i}"] = rules_for(rules, table)
        except (AclSyntaxError, UnsupportedRule):
            continue
    # As the executor sends it: reset, then the canonical rules (which bring their own resetchannels).
    pipe = client.pipeline(transaction=False)
    for name, text in users.items():
        pipe.execute_command("ACL", "SETUSER", name, "reset", *text.split())
    replies = pipe.execute(raise_on_error=False)
    bad = [f"{users[n]!r}: {r}" for n, r in zip(users, replies, strict=False) if isinstance(r, Exception)]
    assert not bad, "\n".join(bad)
    listed = _live_rules(client)
    failures = [
        f"{CORPUS[int(n[1:])]!r} -> {text!r} -> {listed[n]!r}"
        for n, text in users.items()
        if effective(listed[n], table) != effective(CORPUS[int(n[1:])], table)
    ]
    assert not failures, "\n".join(failures)


def test_unsupported_rules_are_refused_by_server(live):
    srv, client, table = live
    probes = {"u_sel": "+get (~x +set)", "u_rw": "%R~x +get", "u_db": "db=0 +get", "u_clear": "clearselectors"}
    errors = _apply(client, probes)
    for name, rules in probes.items():
        try:
            rules_for(rules, table)
            supported = True
        except UnsupportedRule as e:
            supported = False
            assert "not supported on " + table.name in str(e)
        assert supported == (errors[name] is None), (rules, errors[name])


def _probes(client) -> list[list[str]]:
    """One argv per command, per subcommand and per container's bare call, each with as many
    filler arguments as its arity asks, plus the first arguments the corpus allows."""
    out: list[list[str]] = []

    def argv(words: list[str], arity: int) -> list[str]:
        return words + ["0"] * max(abs(arity) - len(words), 0)

    for entry in raw_command(client, "COMMAND"):
        name = entry[0].decode() if isinstance(entry[0], bytes) else entry[0]
        subs = entry[9] if len(entry) > 9 and entry[9] else []
        out.append(argv([name], int(entry[1])) if not subs else [name])  # bare call
        for sub in subs:
            full = sub[0].decode() if isinstance(sub[0], bytes) else sub[0]
            out.append(argv(full.split("|", 1), int(sub[1])))
    for rules in CORPUS:
        for cmd, arg in re.findall(r"\+(select|debug|config)\|(\w+)", rules):
            out.append([cmd, arg] + (["0"] if cmd in ("debug", "config") else []))
    return out


def _dryrun(client, names: list[str], probes: list[list[str]]) -> dict[str, list[str]]:
    """ACL DRYRUN of every probe for every user; replies with the user's name taken out."""
    pipe = client.pipeline(transaction=False)
    for name in names:
        for argv in probes:
            pipe.execute_command("ACL", "DRYRUN", name, *argv)
    replies = iter(pipe.execute(raise_on_error=False))
    out: dict[str, list[str]] = {}
    for name in names:
        got = []
        for _ in probes:
            r = next(replies)
            r = r.decode() if isinstance(r, bytes) else str(r)
            got.append(r.replace(f"User {name} ", "User U "))
        out[name] = got
    return out


def test_written_rules_keep_server_meaning(live):
    """For every corpus rule: the user as the tool writes it (reset + rules_for) gets the same
    ACL DRYRUN verdict as a user given the raw string, for every command, every subcommand and
    every container's bare call; and the engine's command verdicts agree with the server's."""
    srv, client, table = live
    if not table.has_selectors:
        # Redis 6.2 has no ACL DRYRUN: its meaning is compared through ACL LIST above
        with pytest.raises(redis.ResponseError):
            client.execute_command("ACL", "DRYRUN", "default", "PING")
        return
    probes = _probes(client)
    assert ["command"] in probes and ["command", "docs"] in probes
    checked = 0
    failures: list[str] = []
    for start in range(0, len(CORPUS), 20):
        _reset_users(client)
        raw: dict[str, str] = {}
        written: dict[str, str] = {}
        for i, rules in enumerate(CORPUS[start : start + 20], start):
            if isinstance(_engine(rules, table), Exception):
                continue
            raw[f"raw{i}"] = rules
            written[f"w{i}"] = rules_for(rules, table)
        assert not any(_apply(client, raw).values())
        pipe = client.pipeline(transaction=False)
        for name, text in written.items():
            pipe.execute_command("ACL", "SETUSER", name, "reset", *text.split())
        assert not [r for r in pipe.execute(raise_on_error=False) if isinstance(r, Exception)]
        verdicts = _dryrun(client, [*raw, *written], probes)
        for rname, rules in raw.items():
            wname = "w" + rname[3:]
            perms = effective(rules, table)
            for argv, a, b in zip(probes, verdicts[rname], verdicts[wname], strict=True):
                checked += 1
                if a != b:
                    failures.append(f"{rules!r} written as {written[wname]!r}: {argv}: server {a!r}, written {b!r}")
                # The server's reply names the command only when it passed arity and (Valkey 9)
                # database checks; selectors report one of several reasons.
                if perms.selectors or not (a == "OK" or "no permissions to access" in a and "database" not in a
                                           or "no permissions to run" in a):
                    continue
                server_cmd_ok = "no permissions to run" not in a
                if command_allowed(perms.root, argv, table) != server_cmd_ok:
                    failures.append(f"{rules!r}: {argv}: engine {not server_cmd_ok}, server {a!r}")
    assert not failures, "\n".join(failures[:40]) + f"\n({len(failures)} in all)"
    assert checked > 30_000


DRYRUN_RULES = [
    "+@read ~app:*",
    "+@all -@dangerous ~app:* %R~ro:* %W~wo:*",
    "-@all +@read -keys +set ~*",
    "+get +set %R~r:* %W~w:* ~rw:*",
    "+config|get +select|0 +client|id",
    "+@all -@dangerous +flushdb ~* &chat:*",
    "(~sel:* +set) +get ~app:*",
    "+publish +subscribe &news.*",
]
DRYRUN_RULES_DB = [
    "+@all ~* db=0",
    "+@all ~* db=1",
    "+@all ~* db=0,1",
    "+@all ~* resetdbs",
    "+@all ~* db=1 (db=0 +get ~app:*)",
]

DRYRUN_ARGV = [
    ["GET", "app:1"],
    ["GET", "ro:1"],
    ["GET", "wo:1"],
    ["GET", "r:1"],
    ["GET", "w:1"],
    ["GET", "rw:1"],
    ["GET", "other"],
    ["SET", "app:1", "v"],
    ["SET", "ro:1", "v"],
    ["SET", "wo:1", "v"],
    ["SET", "w:1", "v"],
    ["SET", "sel:1", "v"],
    ["SET", "other", "v"],
    ["MGET", "app:1", "other"],
    ["MGET", "app:1", "app:2"],
    ["DEL", "app:1"],
    ["KEYS", "*"],
    ["FLUSHDB"],
    ["FLUSHALL"],
    ["CONFIG", "GET", "maxmemory"],
    ["CONFIG", "SET", "maxmemory", "0"],
    ["SELECT", "0"],
    ["SELECT", "1"],
    ["CLIENT", "ID"],
    ["CLIENT", "KILL", "ID", "1"],
    ["PUBLISH", "news.1", "x"],
    ["PUBLISH", "chat:1", "x"],
    ["PUBLISH", "other", "x"],
    ["INFO"],
    ["PING"],
    ["SWAPDB", "0", "1"],
    ["MOVE", "app:1", "1"],
    ["DBSIZE"],
    ["SCRIPT", "FLUSH"],
]


def test_check_matches_dryrun(live):
    srv, client, table = live
    if not table.has_selectors:
        # Redis 6.2 has no ACL DRYRUN: the engine's check() is compared on 7.0+ only
        with pytest.raises(redis.ResponseError):
            client.execute_command("ACL", "DRYRUN", "default", "PING")
        return
    _reset_users(client)
    rules = DRYRUN_RULES + (DRYRUN_RULES_DB if table.has_databases else [])
    users = {f"d{i}": r for i, r in enumerate(rules)}
    assert not any(_apply(client, users).values())
    pipe = client.pipeline(transaction=False)
    cases = [(n, argv) for n in users for argv in DRYRUN_ARGV]
    for name, argv in cases:
        pipe.execute_command("ACL", "DRYRUN", name, *argv)
    replies = pipe.execute(raise_on_error=False)
    mismatches = []
    for (name, argv), reply in zip(cases, replies, strict=False):
        server_ok = not isinstance(reply, Exception) and reply in (b"OK", "OK", True)
        mine = check(effective(users[name], table), argv, table)
        if mine != server_ok:
            mismatches.append(f"{users[name]!r} {argv}: engine {mine}, server {reply!r}")
    assert not mismatches, "\n".join(mismatches)
    assert len(cases) >= 200


# ---- property test: random rule sequences --------------------------------------------------

_COMMANDS = ["get", "set", "del", "keys", "flushdb", "flushall", "select", "config", "client",
             "info", "mget", "publish", "sort", "eval", "xadd", "hset", "ping"]
_SUBS = ["config|get", "config|set", "client|id", "client|kill", "select|0", "select|1", "debug|object"]
_NEG_SUBS = ["-config|set", "-client|kill", "-select|0"]
_CATS = ["all", "read", "write", "keyspace", "dangerous", "admin", "fast", "slow", "string",
         "connection", "pubsub", "scripting", "hash"]
_PATTERNS = ["*", "a*", "b:?", "app:*", "x"]


def _rule_strategy(modern: bool, dbs: bool):
    cmd = st.builds(lambda s, c: s + c, st.sampled_from("+-"), st.sampled_from(_COMMANDS))
    sub = st.one_of(st.builds(lambda c: "+" + c, st.sampled_from(_SUBS)), st.sampled_from(_NEG_SUBS))
    cat = st.builds(lambda s, c: f"{s}@{c}", st.sampled_from("+-"), st.sampled_from(_CATS))
    keys = st.builds(lambda p: "~" + p, st.sampled_from(_PATTERNS))
    chans = st.builds(lambda p: "&" + p, st.sampled_from(_PATTERNS))
    words = st.sampled_from(["allkeys", "resetkeys", "allchannels", "resetchannels", "allcommands", "nocommands"])
    base = [cmd, sub, cat, keys, chans, words]
    if modern:
        base.append(st.builds(lambda f, p: f"%{f}~{p}", st.sampled_from(["R", "W", "RW"]), st.sampled_from(_PATTERNS)))
    if dbs:
        base.append(st.sampled_from(["db=0", "db=1,2", "alldbs", "resetdbs"]))
    one = st.one_of(*base)
    if modern:
        selector = st.builds(lambda rs: "(" + " ".join(rs) + ")", st.lists(st.one_of(*base), max_size=4))
        one = st.one_of(one, selector, st.just("clearselectors"))
    return st.lists(one, max_size=8).map(" ".join)


@pytest.mark.parametrize("server_id", MATRIX)
def test_random_rules_match_server(server_id, tmp_path_factory):
    srv = start_server(server_id, tmp_path_factory.mktemp(f"prop-{server_id}"))
    try:
        client = srv.admin()
        table = CommandTable.read(client, srv.server, srv.version)
        counter = iter(range(10**6))

        @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
        @given(_rule_strategy(table.has_selectors, table.has_databases))
        def prop(rules: str) -> None:
            name = f"p{next(counter)}"
            mine = _engine(rules, table)
            refused = _apply(client, {name: rules})[name]
            if isinstance(mine, Exception):
                assert refused is not None, f"{rules!r}: engine refuses ({mine}), server accepts"
                return
            assert refused is None, f"{rules!r}: server refuses ({refused}), engine accepts"
            line = client.execute_command("ACL", "LIST")
            perms = dict(
                (parse_acl_list_line(entry.decode() if isinstance(entry, bytes) else entry)[0],
                 parse_acl_list_line(entry.decode() if isinstance(entry, bytes) else entry)[4])
                for entry in line
            )[name]
            assert effective(perms, table) == mine, f"{rules!r}: server prints {perms!r}"
            if table.has_selectors:  # verdicts: the engine's check() against ACL DRYRUN
                pipe = client.pipeline(transaction=False)
                for argv in DRYRUN_ARGV:
                    pipe.execute_command("ACL", "DRYRUN", name, *argv)
                for argv, reply in zip(DRYRUN_ARGV, pipe.execute(raise_on_error=False), strict=False):
                    server_ok = not isinstance(reply, Exception) and reply in (b"OK", "OK", True)
                    assert check(mine, argv, table) == server_ok, f"{rules!r} {argv}: server {reply!r}"
            client.execute_command("ACL", "DELUSER", name)

        prop()
    finally:
        srv.stop()
