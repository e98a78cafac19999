"""Syntax-level tests of the ACL rule parser (no server)."""

import pytest

from reconciler.acl import KNOWN_CATEGORIES, AclSyntaxError, parse, parse_acl_list_line, split_rules


def kinds(rules: str) -> list[str]:
    return [r.kind for r in parse(rules)]


def test_basic_kinds():
    assert kinds("+get -set +@read -@dangerous allcommands nocommands") == [
        "command", "command", "category", "category", "category", "category"]
    assert kinds("~a* %R~b %W~c %RW~d allkeys resetkeys") == [
        "keys", "keys", "keys", "keys", "allkeys", "resetkeys"]
    assert kinds("&ch* allchannels resetchannels clearselectors") == [
        "channel", "allchannels", "resetchannels", "clearselectors"]
    assert kinds("alldbs resetdbs db=0,3") == ["alldbs", "resetdbs", "db"]


def test_fields():
    r = parse("+CONFIG|get")[0]
    assert (r.allow, r.name, r.sub) == (True, "config", "get")
    r = parse("-@Read")[0]
    assert (r.allow, r.name) == (False, "read")
    assert parse("nocommands")[0].name == "all" and not parse("nocommands")[0].allow
    assert [(r.name, r.perm) for r in parse("~a %r~b %W~c %wR~d")] == [
        ("a", "RW"), ("b", "R"), ("c", "W"), ("d", "RW")]
    assert parse("db=3,1,3")[0].dbs == (1, 3)
    assert parse("~*")[0].kind == "allkeys" and parse("&*")[0].kind == "allchannels"
    assert parse("%RW~*")[0].kind == "keys"


def test_identity_rules_are_flagged():
    rules = parse("on off >secret <secret #abc !abc nopass resetpass reset +get")
    assert [r.identity for r in rules] == [True] * 9 + [False]


def test_unknown_category_names_it():
    with pytest.raises(AclSyntaxError) as e:
        parse("~x +@read +@raed")
    assert str(e.value) == "unknown category '@raed'"
    assert e.value.token == "+@raed" and e.value.position == 2
    assert "all" not in KNOWN_CATEGORIES and "dangerous" in KNOWN_CATEGORIES


def test_selectors_keep_inner_spaces():
    assert split_rules("+get ( ~x +set ) (~y  +del) -get") == [
        "+get", "( ~x +set )", "(~y +del)", "-get"]
    r = parse("+get (~x %R~y +set -@all)")[1]
    assert r.kind == "selector"
    assert [i.kind for i in r.selector] == ["keys", "keys", "command", "category"]
    assert parse("()")[0].selector == ()


@pytest.mark.parametrize(
    "rules,token,position",
    [
        ("+get (~x +set", "(~x", 1),
        ("(~x (+get))", "(+get)", 0),
        ("(on +get)", "on", 0),
        ("(clearselectors)", "clearselectors", 0),
        ("+", "+", 0),
        ("~a +cmd|", "+cmd|", 1),
        ("%X~a", "%X~a", 0),
        ("%~a", "%~a", 0),
        ("%RR~a", "%RR~a", 0),
        ("frobnicate", "frobnicate", 0),
        ("~* ~x", "~x", 1),
        ("allkeys %R~x", "%R~x", 1),
        ("&* &x", "&x", 1),
        ("db=a", "db=a", 0),
        ("db=", "db=", 0),
        ("db=-1", "db=-1", 0),
        ("-@", "-@", 0),
    ],
)
def test_syntax_errors(rules, token, position):
    with pytest.raises(AclSyntaxError) as e:
        parse(rules)
    assert e.value.token == token and e.value.position == position
    assert "\n" not in str(e.value)


def test_order_errors_respect_resets():
    parse("~* resetkeys ~x &* resetchannels &y")
    parse("~* (~x) &* (&y)")
    parse("~* reset ~x")


def test_parse_acl_list_line():
    line = "user app on sanitize-payload #aa #bb ~k* resetchannels -@all +get (~x resetchannels -@all +set)"
    assert parse_acl_list_line(line) == (
        "app", True, False, ("aa", "bb"), "~k* resetchannels -@all +get (~x resetchannels -@all +set)")
    assert parse_acl_list_line("user default on nopass ~* &* +@all") == (
        "default", True, True, (), "~* &* +@all")
    assert parse_acl_list_line("user u off resetchannels -@all")[1] is False
    with pytest.raises(ValueError):
        parse_acl_list_line("nope")
