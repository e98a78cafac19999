"""ACL engine against the bundled command tables (no server): equivalence, deltas, rules_for."""

import pytest

from reconciler.acl import (
    AclSyntaxError,
    CommandTable,
    UnsupportedRule,
    check,
    describe,
    describe_delta,
    effective,
    rules_for,
)

TABLES = CommandTable.available()


@pytest.fixture(params=TABLES)
def table(request):
    return CommandTable.bundled(request.param)


def modern(table):
    return table.has_selectors


EQUAL = [
    ("+@all", "allcommands"),
    ("-@all +get", "nocommands +get"),
    ("+get +set", "+set +get"),
    ("+GET", "+get"),
    ("+get -get +get", "+get"),
    ("+@read -@read", ""),
    ("+@read -@dangerous +set -get", "-@all +@read -@dangerous +set -get"),
    ("~a ~b", "~b ~a"),
    ("~a ~a", "~a"),
    ("~*", "allkeys"),
    ("~a resetkeys ~b", "~b"),
    ("&x &y", "&y &x"),
    ("&*", "allchannels"),
    ("&x resetchannels", ""),
    ("+select|0 +select", "+select"),
    ("+select|0 -select", ""),
    ("+@all -get +get", "+@all"),
]

UNEQUAL = [
    ("+@all -@dangerous", "+@all -@dangerous +flushdb"),  # one command
    ("+get", "+get +set"),
    ("+@all", "-@all +@read +@write +@admin +@dangerous +@keyspace +@slow +@fast +@pubsub "
              "+@connection +@transaction +@scripting +@blocking"),  # future commands differ
    ("~a", "~a ~b"),  # one key pattern
    ("~a", "~b"),
    ("&a", "&a &b"),
    ("+select|0", "+select|1"),
    ("+get", ""),
]

EQUAL_MODERN = [
    ("%RW~a", "~a"),
    ("%R~a %W~a", "~a"),
    ("%R~* %W~*", "~*"),
    ("%R~* %R~a", "%R~*"),
    ("(~x +get) (~y +set)", "(~y +set) (~x +get)"),
    ("(~x +get) clearselectors", ""),
    ("( ~x  +get )", "(~x +get)"),
    ("(+get ~x)", "(~x +get)"),
]

UNEQUAL_MODERN = [
    ("(~x +get)", "(~x +get) (~x +get)"),  # selectors are a multiset
    ("(~x +get)", "(~y +get)"),  # one selector differs
    ("(~x +get)", ""),
    ("%R~a", "~a"),
    ("%R~* ~a", "%R~*"),  # ~a also allows writes to a
    ("+config", "+config -config|set"),
    # every subcommand but not the container: no bare call, no subcommand a later version adds
    ("+config|get +config|set +config|rewrite +config|resetstat +config|help", "+config"),
    ("+command -command|docs", "+command|count +command|getkeys +command|info +command|list"),
]


@pytest.mark.parametrize("a,b", EQUAL)
def test_equal(table, a, b):
    assert effective(a, table) == effective(b, table)
    assert hash(effective(a, table)) == hash(effective(b, table))


@pytest.mark.parametrize("a,b", UNEQUAL)
def test_unequal(table, a, b):
    assert effective(a, table) != effective(b, table)


@pytest.mark.parametrize("a,b", EQUAL_MODERN)
def test_equal_modern(table, a, b):
    if not modern(table):
        if a.startswith("+config|"):  # 6.2: first arguments of CONFIG, not subcommands
            assert effective(a, table) != effective(b, table)
        else:
            with pytest.raises(UnsupportedRule):
                effective(a, table)
        return
    assert effective(a, table) == effective(b, table)


@pytest.mark.parametrize("a,b", UNEQUAL_MODERN)
def test_unequal_modern(table, a, b):
    if not modern(table):
        # 6.2 can't express selectors or %R~: the engine refuses (first args of CONFIG differ)
        try:
            ea, eb = effective(a, table), effective(b, table)
        except UnsupportedRule:
            return
        assert ea != eb
        return
    assert effective(a, table) != effective(b, table)


def _subs_but(table, container, skip):
    return " ".join(f"+{s}" for s in table.subcommands(container) if s != f"{container}|{skip}")


@pytest.mark.parametrize(
    "rules, bare",
    [
        ("+command -command|docs", True),
        ("+@all -command|docs", True),
        ("-@all +command|count", False),
        ("+command -command|count -command|docs -command|getkeys -command|getkeysandflags "
         "-command|info -command|list -command|help", True),
        ("+command|docs -command", False),
    ],
)
def test_container_bare_call_is_kept(table, rules, bare):
    """The bare call of a container (COMMAND, sent by clients on connect) has its own bit:
    the canonical form keeps it, and starts from the container when that is as short."""
    if not table.has_subcommands:
        if "-command|" in rules:
            with pytest.raises(UnsupportedRule, match=table.name):
                rules_for(rules, table)
        return
    perms = effective(rules, table)
    assert check(perms, ["COMMAND"], table) is bare
    assert check(perms, ["COMMAND", "DOCS"], table) is False
    text = rules_for(rules, table)
    assert effective(text, table) == perms
    if rules == "+command -command|docs":
        assert text.endswith("-@all +command -command|docs"), text
        assert "command|count" not in text
    listed = effective(_subs_but(table, "command", "docs"), table)
    assert listed != perms and not check(listed, ["COMMAND"], table)


def test_canonical_command_part_is_shared_across_key_patterns(table):
    a = rules_for("~app1:* +@read -@dangerous", table)
    b = rules_for("~app2:* +@read -@dangerous", table)
    assert a.replace("app1", "app2") == b
    assert effective(b, table).root.keys == (("app2:*", "RW"),)


def test_delta_names_the_bare_call(table):
    if not table.has_subcommands:
        return
    before = effective(_subs_but(table, "command", ""), table)
    after = effective("+command", table)
    lines = [(d.sign, d.text) for d in describe_delta(before, after)]
    assert lines == [("+", "grants COMMAND (bare call)")]
    back = [(d.sign, d.text) for d in describe_delta(after, before)]
    assert back == [("-", "revokes COMMAND (bare call)")]


def test_category_expands_at_time_of_rule(table):
    p = effective("-@all +@read -keys +set", table)
    names = set(p.allowed_commands())
    assert "get" in names and "set" in names and "keys" not in names
    p = effective("-@all +set +@read -@write", table)
    assert "set" not in p.allowed_commands()


def test_first_arg_kept_only_while_command_denied(table):
    assert effective("+select|0", table).root.firstargs == (("select", "0"),)
    assert effective("+select|0 +select", table).root.firstargs == ()
    cat = next(c for c in ("keyspace", "connection") if "select" in
               set(effective(f"+@{c}", table).allowed_commands()))
    assert effective(f"+select|0 -@{cat}", table).root.firstargs == ()


def test_unknown_command_and_version_limits(table):
    with pytest.raises(AclSyntaxError):
        effective("+nosuchcommand", table)
    with pytest.raises(AclSyntaxError):
        effective("-select|0", table)
    if not table.has_databases:
        with pytest.raises(UnsupportedRule):
            effective("db=0", table)
    else:
        assert effective("db=3,1", table).root.dbs == (1, 3)
        assert effective("db=1 alldbs", table).root.dbs is None
        assert effective("db=1 resetdbs", table).root.dbs == ()
    if not modern(table):
        with pytest.raises(UnsupportedRule, match="selectors"):
            rules_for("+get (~x +set)", table)
        with pytest.raises(UnsupportedRule):
            rules_for("%R~x", table)


@pytest.mark.parametrize("rules", [r for pair in EQUAL + UNEQUAL for r in pair])
def test_rules_for_is_exact(table, rules):
    text = rules_for(rules, table)
    assert text.split()[0] in ("resetchannels", "&*")
    assert effective(text, table) == effective(rules, table)


def test_describe(table):
    p = effective("+@all -@dangerous ~billing:*", table)
    assert describe(p) == ["commands: +@all -@dangerous", "keys: billing:*", "channels: -"]
    assert describe(effective("", table)) == ["commands: -@all", "keys: -", "channels: -"]


def test_describe_delta_marks_dangerous(table):
    before = effective("~orders:* +@write -flushall", table)
    after = effective("~orders:* ~orders:archive:* +@write -keys", table)
    lines = [(d.sign, d.text) for d in describe_delta(before, after)]
    assert ("!", "grants FLUSHALL (dangerous)") in lines
    assert ("+", "keys orders:archive:*") in lines
    back = [(d.sign, d.text) for d in describe_delta(after, before)]
    assert ("-", "revokes FLUSHALL") in back and ("-", "keys orders:archive:*") in back
    assert describe_delta(before, before) == []
    flush = [(d.sign, d.text) for d in describe_delta(effective("+get", table), effective("+get +flushdb", table))]
    assert flush == [("!", "grants FLUSHDB (dangerous)")]


def test_check(table):
    p = effective("-@all +get +set ~app:* %R~ro:* &chat:*", table) if modern(table) else \
        effective("-@all +get +set ~app:* &chat:*", table)
    assert check(p, ["GET", "app:1"])
    assert not check(p, ["GET", "other"])
    assert not check(p, ["DEL", "app:1"])
    if modern(table):
        assert check(p, ["GET", "ro:1"]) and not check(p, ["SET", "ro:1", "v"])


def test_reads_acl_list_quirk_but_parse_stays_strict(table):
    # Servers print a `%RW~*` pattern as `~*` followed by the other patterns.
    assert effective("~* ~a*", table) == effective("~*", table)
    assert effective("&* &x", table) == effective("&*", table)
    with pytest.raises(AclSyntaxError):
        from reconciler.acl import parse

        parse("~* ~a*")


def test_delta_summarizes_large_grants(table):
    lines = [(d.sign, d.text) for d in describe_delta(effective("-@all", table), effective("+@read", table))]
    assert ("+", "grants @read") in lines
    assert ("!", "grants KEYS (dangerous)") in lines
    lines = [(d.sign, d.text) for d in describe_delta(effective("-@all", table), effective("+@all", table))]
    assert ("+", "grants all commands") in lines
    assert ("!", "grants commands added later by modules (+@all)") in lines
    assert any(s == "!" and "dangerous commands: " in t and "FLUSHALL" in t for s, t in lines)


def test_delta_selectors(table):
    if not modern(table):
        with pytest.raises(UnsupportedRule):
            effective("+get ~a (~x +set)", table)
        return
    before = effective("+get ~a", table)
    after = effective("+get ~a (~x +set) (~y +flushall)", table)
    lines = [(d.sign, d.text) for d in describe_delta(before, after)]
    assert ("+", "selector (commands: -@all +set; keys: x; channels: -)") in lines
    assert ("!", "selector (commands: -@all +flushall; keys: y; channels: -)") in lines
    back = [(d.sign, d.text) for d in describe_delta(after, before)]
    assert [s for s, _ in back] == ["-", "-"]


def test_commands_of_other_versions_are_unsupported_not_unknown():
    from reconciler.acl import known_command

    old = CommandTable.bundled("redis-6.2.14")
    with pytest.raises(UnsupportedRule, match="sort_ro"):
        effective("+sort_ro", old)
    with pytest.raises(UnsupportedRule, match="config\\|set"):
        effective("+@all -config|set", old)
    with pytest.raises(AclSyntaxError, match="unknown command 'gett'"):
        effective("+gett", old)
    assert known_command("GET") and known_command("config|get") and not known_command("gett")


def test_selectors_with_and_without_database_rules_sort(table):
    """Selectors differing only in a database rule (None: all) are ordered, not compared as None < tuple."""
    if not table.has_databases:
        return
    a = effective("() (db=0)", table)
    assert a == effective("(db=0) ()", table)
    assert len(a.selectors) == 2 and {s.dbs for s in a.selectors} == {None, (0,)}
    assert describe_delta(effective("", table), a)
