"""The denials report's pure parts, without servers: parsing ACL LOG replies as each version
sends them, merging per user/reason/object, lossy logs, one process counted once, ties to the
audit log, the audit record's words, escaping and the Markdown budget."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from reconciler import config
from reconciler.acl.table import CommandTable
from reconciler.audit import AuditLog
from reconciler.denials import changes, merge, tie
from reconciler.denials import since as window
from reconciler.denials.model import Denial, InstanceLog, LogEntry, NodeLog
from reconciler.errors import LiveError, ReconcilerError
from reconciler.plan import Action, DeltaLine, Plan, TokenAction, TokenChange, UserChange
from reconciler.providers.redis import acllog
from reconciler.render import denials as render
from reconciler.render.markdown import Budget

NOW = 1_800_000_000.0
ACCESS = """\
version: 1
instances:
  cache:
    nodes: ["127.0.0.1:7000"]
    admin: {username: admin, secret: {env: T_ADMIN}}
users:
  admin:
    acl: "+@all ~*"
    tokens: [{id: a, secret: {env: T_ADMIN}}]
  app-orders:
    acl: "~orders:* +@read"
    tokens:
      - id: 2026-11
        sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
"""


@pytest.fixture
def desired(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("T_ADMIN", "Admin-plaintext-0123456789abcdef")
    path = tmp_path / "access.yaml"
    path.write_text(ACCESS)
    return config.load(str(path))


def entry(reason: str = "command", obj: str = "keys", user: str = "app-orders", count: int = 1, age: float = 10.0, **kw) -> LogEntry:
    return LogEntry(reason=reason, context=kw.pop("context", "toplevel"), object=obj, username=user, count=count, last_age=age, **kw)


def node(address: str = "127.0.0.1:7000", *entries: LogEntry, role: str = "primary", version: str = "8.0.2", **kw) -> NodeLog:
    return NodeLog(
        address=address, role=role, server="redis", version=version, run_id=kw.pop("run_id", address),
        entries=entries, max_len=kw.pop("max_len", 128), read_at=kw.pop("read_at", NOW), **kw,
    )


def exact(reason: str = "command", obj: str = "keys", *, eid: int, age: float = 10.0, span: float = 0.0, **kw) -> LogEntry:
    return entry(reason, obj, age=age, first_age=age + span, entry_id=eid, created_ms=int((NOW - age - span) * 1000), **kw)


def build(desired, *nodes: NodeLog, history=None, since=None, logs=None):
    logs = logs or [InstanceLog("cache", "redis", nodes=nodes)]
    return merge.build(desired, logs, history, now=NOW, since=since, table_for=CommandTable.nearest)


# -- parsing what each version sends ---------------------------------------------------------


def raw(pairs: dict) -> list:
    out: list = []
    for k, v in pairs.items():
        out += [k.encode(), v.encode() if isinstance(v, str) else v]
    return out


V62 = {
    "count": 3, "reason": "command", "context": "toplevel", "object": "client", "username": "app",
    "age-seconds": "4.5", "client-info": "id=6 addr=10.0.3.4:51234 laddr=127.0.0.1:6379 fd=8 name=worker-1 cmd=client user=app",
}
V80 = {
    **V62, "object": "client|kill", "entry-id": 7, "timestamp-created": 1_000_000, "timestamp-last-updated": 1_060_500,
    "client-info": "id=7 addr=[::1]:40000 laddr=[::1]:6379 name= user=app",
}


def test_entries_as_6_2_sends_them_have_no_identity_and_no_first_time() -> None:
    e = acllog.parse_entry(raw(V62))
    assert (e.reason, e.object, e.username, e.count, e.last_age) == ("command", "client", "app", 3, 4.5)
    assert e.entry_id is None and e.first_age is None and e.created_ms is None
    assert (e.client, e.client_name) == ("10.0.3.4", "worker-1")  # the port changes per connection


def test_entries_as_7_2_and_later_send_them_place_the_creation_exactly() -> None:
    e = acllog.parse_entry(raw(V80))
    assert e.entry_id == 7 and e.created_ms == 1_000_000
    assert e.first_age == pytest.approx(4.5 + 60.5)  # last update minus creation, on the server's clock
    assert e.client == "::1" and e.client_name == ""


def test_a_key_that_is_not_utf8_is_kept_and_shown_escaped() -> None:
    e = acllog.parse_entry([b"reason", b"key", b"object", b"ord\xff\x1b[31m", b"username", b"app", b"count", 1, b"age-seconds", b"0"])
    assert e.object == "ord\udcff\x1b[31m"
    assert render.shown(e.object) == '"ord\\udcff\\u001b[31m"'  # no raw escape byte reaches a terminal


def test_node_reply_totals_max_len_and_version() -> None:
    replies = [
        b"# Server\r\nredis_version:8.0.2\r\nrun_id:abc\r\nuptime_in_seconds:3600\r\n",
        b"# Stats\r\nacl_access_denied_auth:44\r\nacl_access_denied_cmd:8\r\nacl_access_denied_key:1\r\nacl_access_denied_channel:0\r\n",
        [b"acllog-max-len", b"4"],
        [raw(V80)],
    ]
    n = acllog.parse_node("127.0.0.1:7000", "replica", replies, NOW)
    assert (n.server, n.version, n.run_id, n.max_len, n.uptime) == ("redis", "8.0.2", "abc", 4, 3600.0)
    assert n.denied_total == {"auth": 44, "command": 8, "key": 1, "channel": 0}
    assert len(n.entries) == 1 and n.exact


def test_a_sentinel_refusing_config_is_read_all_the_same() -> None:
    from redis import ResponseError

    replies = [b"redis_version:7.0.15\r\nrun_id:s1\r\n", b"", ResponseError("unknown command `CONFIG`"), []]
    n = acllog.parse_node("127.0.0.1:26379", "sentinel", replies, NOW)
    assert n.max_len is None and n.entries == () and not n.error


def test_acl_log_refused_says_what_to_allow() -> None:
    from redis import ResponseError

    with pytest.raises(LiveError, match=r"ACL LOG refused: NOPERM .*allow `acl\|log` for the admin user"):
        acllog.parse_node("a:1", "primary", [b"", b"", [], ResponseError("NOPERM User x has no permissions to run the 'acl|log' command")], NOW)


# -- merging ---------------------------------------------------------------------------------


def test_merged_per_user_reason_object_over_nodes(desired) -> None:
    a = node("127.0.0.1:7000", exact(eid=1, count=3, age=5, span=100), exact("key", "billing:1", eid=2, age=50))
    b = node("127.0.0.1:7001", exact(eid=9, count=2, age=1, span=10), role="replica")
    report = build(desired, a, b)
    keys_denial = next(d for d in report.denials if d.object == "keys")
    assert keys_denial.count == 5
    assert keys_denial.nodes == (("127.0.0.1:7000", 3), ("127.0.0.1:7001", 2))
    assert keys_denial.last == NOW - 1 and keys_denial.first == pytest.approx(NOW - 105)
    assert keys_denial.exact and keys_denial.declared
    assert [d.reason for d in report.denials] == ["command", "key"]
    assert report.instances[0].approximate == ""


def test_failed_auth_merged_per_name_known_users_and_probing(desired) -> None:
    n = node(
        "127.0.0.1:7000",
        entry("auth", "AUTH", "app-orders", 10, client="10.0.3.4"),
        entry("auth", "HELLO", "app-orders", 5, client="10.0.3.5"),
        entry("auth", "AUTH", "root", 7, client="10.9.9.9", client_name="scanner"),
    )
    report = build(desired, n)
    by_user = {d.user: d for d in report.denials}
    assert by_user["app-orders"].count == 15 and by_user["app-orders"].clients == ("10.0.3.4", "10.0.3.5")
    assert not by_user["app-orders"].probing and by_user["app-orders"].unintended  # a declared user: wrong or old token
    assert by_user["root"].probing and not by_user["root"].unintended
    assert by_user["root"].client_names == ("scanner",)


def test_sentinel_names_are_judged_against_sentinel_users(desired) -> None:
    n = node("127.0.0.1:26379", entry("auth", "AUTH", "app-orders"), role="sentinel")
    (d,) = build(desired, n).denials
    assert d.probing  # app-orders is a data-node user: on a sentinel it is not declared


def test_since_keeps_what_was_last_seen_in_the_window(desired) -> None:
    n = node("127.0.0.1:7000", entry(obj="keys", age=30), entry(obj="flushall", age=7200))
    report = build(desired, n, since=3600)
    assert [d.object for d in report.denials] == ["keys"]


def test_before_7_2_figures_are_approximate(desired) -> None:
    n = node("127.0.0.1:7000", entry(count=4), version="6.2.14")
    report = build(desired, n)
    (d,) = report.denials
    assert d.first is None and not d.exact
    assert "approximate on Redis 6.2.14" in report.instances[0].approximate


def test_a_full_log_is_lossy_unless_its_oldest_entry_predates_the_window(desired) -> None:
    entries = [entry(obj=f"c{i}", age=100 + i) for i in range(4)]
    full = node("127.0.0.1:7000", *entries, max_len=4)
    (summary,) = build(desired, full).instances[0].nodes
    assert "log full (4 entries, acllog-max-len 4)" in summary.lossy
    (summary,) = build(desired, full, since=3600).instances[0].nodes
    assert summary.lossy  # the oldest kept entry is inside the window: older ones of the window may be gone
    (summary,) = build(desired, full, since=50).instances[0].nodes
    assert summary.lossy == ""  # everything dropped was last seen before the window
    not_full = node("127.0.0.1:7000", *entries, max_len=128)
    assert build(desired, not_full).instances[0].nodes[0].lossy == ""


def test_server_counters_tell_how_many_denials_the_log_lost(desired) -> None:
    n = node("127.0.0.1:7000", exact(eid=1, count=3), max_len=1, denied_total={"command": 10, "auth": 2})
    (summary,) = build(desired, n).instances[0].nodes
    assert "counted 9 more denials since it started than its log holds" in summary.lossy
    reset = replace(n, max_len=128)
    (summary,) = build(desired, reset).instances[0].nodes
    assert summary.lossy == "" and "ACL LOG RESET" in summary.coverage


def test_a_restart_inside_the_window_is_said(desired) -> None:
    n = node("127.0.0.1:7000", uptime=600.0)
    (summary,) = build(desired, n, since=3600).instances[0].nodes
    assert "restarted at" in summary.coverage


def test_log_off_is_lossy(desired) -> None:
    (summary,) = build(desired, node("127.0.0.1:7000", max_len=0)).instances[0].nodes
    assert "acllog-max-len 0" in summary.lossy


def test_one_process_read_twice_is_counted_once_entry_by_entry(desired) -> None:
    # A sentinel shared by two instances, read a few seconds apart: the entry grew from 2 to 5.
    first = node("127.0.0.1:26379", exact("auth", "AUTH", eid=3, count=2, user="root"), role="sentinel", run_id="S", read_at=NOW - 5)
    second = node("127.0.0.1:26379", exact("auth", "AUTH", eid=3, count=5, user="root"), exact(eid=4, user="root"), role="sentinel", run_id="S")
    logs = [InstanceLog("cache", "redis", nodes=(first,)), InstanceLog("other", "redis", nodes=(second,))]
    report = build(desired, logs=logs)
    assert sum(d.count for d in report.denials) == 6  # 5 (the later version of entry 3) + 1, not 2 + 5 + 1
    assert {d.instance for d in report.denials} == {"cache"}
    assert report.instances[1].nodes[0].duplicate_of == "cache 127.0.0.1:26379"


def test_before_7_2_a_process_read_twice_keeps_the_later_read(desired) -> None:
    first = node("a:1", entry(count=2), run_id="R", version="7.0.15", read_at=NOW - 5)
    second = node("b:1", entry(count=3), run_id="R", version="7.0.15")
    report = build(desired, first, second)
    assert sum(d.count for d in report.denials) == 3
    assert report.instances[0].nodes[1].duplicate_of == "a:1"


def test_unavailable_and_unreadable_instances_and_nodes(desired) -> None:
    logs = [
        InstanceLog("cache", "redis", nodes=(node("127.0.0.1:7000"), NodeLog("127.0.0.1:7001", "replica", error="timed out after 1 s (ACL LOG)"))),
        InstanceLog("cloud", "redis-cloud", unavailable="Redis Cloud databases refuse ACL LOG"),
    ]
    report = build(desired, logs=logs)
    assert report.errors == ("cache 127.0.0.1:7001: timed out after 1 s (ACL LOG)",)
    assert not report.has_denials
    text = render.render_text(report)
    assert "Instance cloud: ACL LOG is not available: Redis Cloud databases refuse ACL LOG" in text
    assert "! 127.0.0.1:7001: not read: timed out after 1 s (ACL LOG)" in text
    assert "Instance cache (2 nodes: 127.0.0.1:7000 primary, 1 replica; Redis 8.0.2)\n" in text  # no empty label


def test_a_log_not_read_is_not_reported_as_no_denials(desired) -> None:
    unread = NodeLog("127.0.0.1:7001", "replica", error="ACL LOG refused: NOPERM")
    some = build(desired, logs=[InstanceLog("cache", "redis", nodes=(node("127.0.0.1:7000"), unread))])
    text = render.render_text(some)
    assert "  no denials on the 1 node read\n" in text and "  no denials\n" not in text
    assert "No denials in the logs that were read; 1 not read (see above)." in text
    none = build(desired, logs=[InstanceLog("cache", "redis", nodes=(unread,))])
    for text in (render.render_text(none), render.render_markdown(none)):
        assert "no denials\n" not in text.lower() and "No denials." not in text
        assert "not read: ACL LOG refused: NOPERM" in text


# -- ties to the audit log -------------------------------------------------------------------


def audit_line(action: str, user: str, t: str, *, plan: str = "p1", node: str = "127.0.0.1:7000", result: str = "ok", **extra) -> str:
    return json.dumps({"time": t, "instance": "cache", "node": node, "action": action, "user": user, "result": result,
                       "plan": plan, "tokens": extra.pop("tokens", []), **extra})


def iso(epoch: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def denial(reason: str = "command", obj: str = "scan", *, first: float | None = NOW - 50, last: float = NOW - 10, user: str = "app-orders") -> Denial:
    return Denial("cache", user, reason, obj, 3, last, first, (("127.0.0.1:7000", 3),))


def test_a_command_in_and_n_more_is_tied_through_the_listed_commands() -> None:
    history = changes.parse([
        audit_line("update", "app-orders", iso(NOW - 100), permissions=["- revokes @pubsub, ACL (bare call) and 73 more"],
                   revoked_commands=["acl|", "scan", "client|kill"]),
    ])
    c = tie.cause(denial(obj="scan"), history, None)
    assert c is not None and c.words == "- revokes SCAN" and c.time == pytest.approx(NOW - 100) and c.likely == ""
    assert tie.cause(denial(obj="client|kill"), history, None).words == "- revokes CLIENT KILL"
    assert tie.cause(denial(obj="client"), history, None) is not None  # 6.2 logs the container
    assert tie.cause(denial(obj="acl|cat"), history, None) is None  # only ACL's bare call was revoked
    assert tie.cause(denial(obj="get"), history, None) is None


def test_words_alone_tie_categories_keys_and_channels() -> None:
    table = CommandTable.bundled("redis-7.0.15")
    history = changes.parse([
        audit_line("update", "app-orders", iso(NOW - 100), permissions=["- revokes @write", "- keys orders:*", "- channels news.*", "+ keys orders:archive:*"]),
    ])
    assert tie.cause(denial(obj="set"), history, table).words == "- revokes @write"
    assert tie.cause(denial("key", "orders:1"), history, table).words == "- keys orders:*"
    assert tie.cause(denial("channel", "news.eu"), history, table).words == "- channels news.*"
    assert tie.cause(denial("key", "billing:1"), history, table) is None
    assert tie.cause(denial(obj="get"), history, table) is None


def test_only_a_change_made_before_the_denials_began_is_their_cause() -> None:
    history = changes.parse([
        audit_line("update", "app-orders", iso(NOW - 500), plan="old", permissions=["- revokes KEYS"], revoked_commands=["keys"]),
        audit_line("update", "app-orders", iso(NOW - 30), plan="new", permissions=["- revokes KEYS"], revoked_commands=["keys"]),
    ])
    c = tie.cause(denial(obj="keys", first=NOW - 50), history, None)
    assert c is not None and c.time == pytest.approx(NOW - 500)  # the later one came after they began
    assert tie.cause(denial(obj="keys", first=NOW - 1000, last=NOW - 900), history, None) is None
    # Before 7.2 only the last denial's time is known.
    assert tie.cause(denial(obj="keys", first=None, last=NOW - 10), history, None).time == pytest.approx(NOW - 30)


def test_failed_auth_after_a_token_removal_is_likely_tied_with_the_tokens_id() -> None:
    history = changes.parse([
        audit_line("create", "app-orders", iso(NOW - 900), plan="a", tokens=[{"id": "2026-08", "sha256": "5e884898", "change": "add"}]),
        audit_line("update", "app-orders", iso(NOW - 100), plan="b", tokens=[{"id": None, "sha256": "5e884898", "change": "remove"}]),
    ])
    c = tie.cause(denial("auth", ""), history, None)
    assert c is not None and c.words == "token 2026-08 (sha256:5e884898…) was removed"
    assert c.likely.startswith("ACL LOG does not say which password was tried") and "began after" in c.likely
    old = tie.cause(denial("auth", "", first=None), history, None)
    assert "before Redis 7.2" in old.likely


def test_failed_auth_for_a_deleted_user_is_not_probing(desired) -> None:
    history = changes.parse([audit_line("delete", "legacy", iso(NOW - 100))])
    report = build(desired, node("127.0.0.1:7000", entry("auth", "AUTH", "legacy", age=5)), history=history)
    (d,) = report.denials
    assert not d.declared and not d.probing and d.unintended
    assert d.cause.words == "the user was deleted"


def test_audit_lines_of_one_apply_are_one_change_and_bad_lines_are_counted() -> None:
    lines = [
        audit_line("update", "app-orders", iso(NOW - 100), node="a:1", permissions=["- revokes KEYS"]),
        audit_line("update", "app-orders", iso(NOW - 99), node="b:1", permissions=["- revokes KEYS"]),
        audit_line("update", "app-orders", iso(NOW - 98), result="failed: NOPERM", permissions=["- revokes GET"]),
        '{"time": "2026-',
        "",
    ]
    h = changes.parse(lines)
    (c,) = h.changes
    assert c.time == pytest.approx(NOW - 100) and c.permissions == ("- revokes KEYS",)
    assert h.skipped == 1


def test_audit_records_with_fields_of_the_wrong_type_are_skipped_and_counted() -> None:
    good = audit_line("update", "app-orders", iso(NOW - 100), permissions=["- revokes KEYS"])
    bad = [audit_line("update", "app-orders", iso(NOW - 90), plan=f"p{i}", **{field: value})
           for i, (field, value) in enumerate([("permissions", 5), ("tokens", 7), ("revoked_commands", True), ("permissions", "- keys *")])]
    times = [audit_line("update", "app-orders", t, plan=t) for t in ("2026-13-01", "yesterday", "")]
    other = audit_line("persist", "", iso(NOW - 80))  # not a change to a user: neither kept nor counted
    h = changes.parse([good, *bad, json.dumps([1, 2]), json.dumps("text"), *times, other])
    (c,) = h.changes
    assert c.permissions == ("- revokes KEYS",)
    assert h.skipped == 9


def test_a_long_key_against_a_revoked_pattern_of_many_stars_is_matched_in_linear_time() -> None:
    # Key names are whoever talks to the server's: a backtracking match took minutes on 4 KB.
    started = time.monotonic()
    assert not tie.revokes("- keys orders:*:*:*:*:x", "key", "orders:" + ":" * 200_000, None)
    assert tie.revokes("- keys orders:*:*:*:*:x", "key", "orders:" + ":" * 200_000 + "x", None)
    assert tie.revokes("- channels *a*a*a*a*b", "channel", "a" * 200_000 + "b", None)
    assert not tie.revokes("- channels *a*a*a*a*b", "channel", "a" * 200_000, None)
    assert time.monotonic() - started < 2


def test_a_tampered_audit_records_words_stay_inert_in_every_format(desired) -> None:
    evil = "\n```\n</details><img src=x onerror=alert(1)>\x1b[2J\u202e"
    history = changes.parse([
        audit_line("update", "app-orders", iso(NOW - 100), permissions=[f"- keys orders:* {evil}"]),
        audit_line("update", "app-orders", iso(NOW - 90), plan="p2", tokens=[{"id": f"2026-08{evil}", "sha256": "5e884898", "change": "remove"}]),
    ])
    report = build(desired, node("127.0.0.1:7000", exact("key", "orders:1", eid=1), exact("auth", "AUTH", eid=2, user="app-orders")), history=history)
    assert len(report.caused) == 2
    for text in (render.render_text(report), render.render_markdown(report)):
        assert "<img" not in text and "</details><" not in text and "\x1b" not in text and "\u202e" not in text
        assert text.count("```") % 2 == 0 and "\n```\n</details>" not in text
        assert '"- keys orders:* \\u000a\\u0060\\u0060\\u0060' in text  # readable, escaped
        assert "(sha256:5e884898…) was removed" in text  # the ellipsis of our own words stays


def test_a_declared_users_name_is_never_taken_for_a_token(desired) -> None:
    import hashlib

    # The audit log names tokens by an 8-digit prefix: one that happens to be the prefix of a
    # declared user's name must not turn that user's failed AUTH into an unknown name's.
    prefix = hashlib.sha256(b"app-orders").hexdigest()[:8]
    history = changes.parse([audit_line("create", "other", iso(NOW - 900), tokens=[{"id": "t", "sha256": prefix, "change": "add"}])])
    report = build(desired, node("127.0.0.1:7000", exact("auth", "AUTH", eid=1, user="app-orders")), history=history)
    (d,) = report.denials
    assert d.user == "app-orders" and d.declared and d.unintended


def test_a_fleets_audit_log_and_thousands_of_rows_are_tied_in_seconds() -> None:
    # Each row looked through every change of the log: 400,000 changes and 5,000 rows took 4 minutes.
    others = [changes.Change(NOW - 1000 + i / 1000, "cache", f"user-{i % 50}", "update", ("- revokes KEYS",), ("keys",))
              for i in range(200_000)]
    mine = changes.Change(NOW - 2000, "cache", "app-orders", "update", ("- keys orders:*",))
    history = changes.History(changes=tuple([mine, *others]), token_ids={})
    started = time.monotonic()
    causes = [tie.cause(denial("key", f"orders:{i}"), history, None) for i in range(2000)]
    assert time.monotonic() - started < 5
    assert all(c is not None and c.words == "- keys orders:*" for c in causes)
    assert tie.cause(denial(obj="keys"), history, None) is None  # KEYS was revoked from the others only


def test_the_audit_record_names_what_a_change_granted_and_revoked(tmp_path: Path) -> None:
    change = UserChange(
        Action.UPDATE, "app-orders", enabled=False, enabled_before=True,
        tokens=(TokenChange(TokenAction.REMOVE, "5e884898" + "0" * 56, None, reason="not in file"),),
        permissions=(DeltaLine("-", "revokes @pubsub and 3 more", commands=("publish", "subscribe", "keys", "scan")), DeltaLine("+", "keys orders:archive:*")),
    )
    path = tmp_path / "audit.jsonl"
    with AuditLog(str(path), Plan(source="x", instances=())) as log:
        log.record(instance="cache", node="a:1", action="update", user="app-orders", result="ok", change=change)
        log.record(instance="cache", node="a:1", action="delete", user="old", result="ok", change=UserChange(Action.DELETE, "old"))
    upd, dele = (json.loads(x) for x in path.read_text().splitlines())
    assert upd["permissions"] == ["- revokes @pubsub and 3 more", "+ keys orders:archive:*"]
    assert upd["revoked_commands"] == ["publish", "subscribe", "keys", "scan"]
    assert upd["enabled"] is False and upd["tokens"] == [{"id": None, "sha256": "5e884898", "change": "remove"}]
    assert "permissions" not in dele and "enabled" not in dele


# -- rendering ---------------------------------------------------------------------------------


@pytest.mark.parametrize("hostile", ["\x1b[2J", "a\nb", "```", "<img src=x>", "x" * 500])
def test_hostile_names_are_escaped_and_cut(hostile: str) -> None:
    out = render.shown(hostile)
    assert "\x1b" not in out and "\n" not in out and "```" not in out and "<" not in out
    assert len(out) < 200


def test_markdown_fits_the_budget_and_keeps_the_table(desired) -> None:
    entries = [entry("key", f"orders:{i:05d}:" + "k" * 40, age=i) for i in range(3000)]
    report = build(desired, node("127.0.0.1:7000", *entries, max_len=5000))
    md = render.render_markdown(report, budget=Budget(max_chars=8000))
    assert len(md) <= 8000
    assert "| cache | 3,000 | 0 | 0 | 0 | 0 |  |" in md
    assert "rows not shown" in md and "Full report: `reconciler denials -f FILE --format json`" in md
    small = build(desired, node("127.0.0.1:7000", *entries[:300], max_len=5000))
    whole = render.render_markdown(small)
    assert "rows not shown" not in whole and whole.count("orders:") == 300


def test_json_carries_the_same_content(desired) -> None:
    report = build(desired, node("127.0.0.1:7000", entry("auth", "AUTH", "root\udcff", 2)))
    doc = json.loads(render.render_json(report))
    assert doc["format"] == "denials/1" and doc["summary"]["failed_auth"] == 2
    assert doc["summary"]["probing"] == ["root\udcff"]
    (d,) = doc["instances"][0]["denials"]
    assert d["probing"] and not d["unintended"] and d["reason"] == "auth"


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800), ("1h30m", 5400), ("2w", 1209600)])
def test_since_durations(text: str, seconds: int) -> None:
    assert window.parse(text) == seconds


@pytest.mark.parametrize(
    "text",
    # a number too long for a float, and one too long for Python's int parsing: clear errors too
    ["", "24", "h", "1.5h", "-3h", "0m", "24 hours", "3y", "1" + "0" * 400 + "s", "1" + "0" * 5000 + "w"],
    ids=lambda t: t if len(t) < 20 else f"{len(t)}-chars",
)
def test_bad_since_is_one_clear_error(text: str) -> None:
    with pytest.raises(ReconcilerError, match=r"--since .*: "):
        window.parse(text)
