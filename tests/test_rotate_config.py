"""`rotate:` in the file: what plain `validate` accepts and refuses (one line each, with file:line
and YAML path), without a store or a server; and the pure parts of rotation (due dates, overlap,
what a plan left by an earlier run means, token generation per provider)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from support.cli import Cli

from reconciler import rotation, tokengen
from reconciler.model import Policies
from reconciler.providers.redis_software import rules as software_rules

HEAD = """\
version: 1
instances:
  cache:
    nodes: ["10.0.0.5:6379"]
  rc:
    provider: redis-cloud
    api: {subscription: 1, database: 2}
    admin: {account_key: {env: RC_ACCOUNT}, secret: {env: RC_SECRET}}
users:
"""


def user(name: str, tokens: str, instances: str = "[cache]") -> str:
    return f"  {name}:\n    instances: {instances}\n    acl: \"+ping\"\n    tokens:\n{tokens}"


VAULT = "        secret: {{vault: {{path: apps/{p}, field: token{v}}}}}\n"


def current(p: str = "orders", extra: str = "        rotate: {every_days: 30}\n") -> str:
    return "      - id: current\n" + VAULT.format(p=p, v="") + extra


def previous(p: str = "orders") -> str:
    return "      - id: previous\n" + VAULT.format(p=p, v=", version: -1")


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    for k in ("VAULT_ADDR", "VAULT_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    return Cli(tmp_path, capsys=capsys)


def validate(cli: Cli, text: str) -> tuple[int, str]:
    cli.write(text)
    code, out, err = cli("validate", "-f", str(cli.file))
    return code, out + err


def test_a_rotating_entry_validates_without_any_store(cli: Cli) -> None:
    code, text = validate(cli, HEAD + user("app-orders", current() + previous()))
    assert code == 0, text


@pytest.mark.parametrize(
    ("tokens", "where", "message"),
    [
        ("      - id: current\n        secret: {env: ORDERS}\n        rotate: {every_days: 30}\n", "users.app-orders.tokens[0].rotate",
         "rotate: needs a source it can write the new token to -- a vault: secret (version 0), a file: secret, or a sink: -- and a env: secret can't be written"),
        ("      - id: current\n        sha256: " + "a" * 64 + "\n        rotate: {every_days: 30}\n", "users.app-orders.tokens[0].rotate",
         "a sha256: entry can't be written"),
        ("      - id: old\n        secret: {vault: {path: apps/orders, field: token, version: -1}}\n        rotate: {every_days: 30}\n",
         "users.app-orders.tokens[0].rotate", "the entry must read the latest (version 0)"),
        (current(), "users.app-orders.tokens[0].rotate",
         "rotates vault:secret/apps/orders#token: declare the version before too (- id: previous, secret: {vault: {path: apps/orders, field: token, version: -1}})"),
        (current() + previous() + current("orders").replace("id: current", "id: again"), "users.app-orders.tokens[2].rotate",
         "which token current rotates already: one entry rotates a store"),
        (current(extra="        rotate: {every_days: 30, usernames: [a, b]}\n") + previous(), "users.app-orders.tokens[0].rotate.usernames",
         "rotate.usernames is for provider redis-cloud"),
    ],
)
def test_refused(cli: Cli, tokens: str, where: str, message: str) -> None:
    code, text = validate(cli, HEAD + user("app-orders", tokens))
    assert code == 1
    line = next((ln for ln in text.splitlines() if message in ln), None)
    assert line is not None, text
    assert f": {where}: " in line and line.startswith(str(cli.file) + ":")


def test_redis_cloud_rotates_through_a_pair(cli: Cli) -> None:
    pair = ("      - id: current\n        secret: {vault: {path: apps/orders, field: token}}\n        username: {field: username}\n"
            "        rotate: {every_days: 30, usernames: [orders-a, orders-b]}\n"
            "      - id: previous\n        secret: {vault: {path: apps/orders, field: token, version: -1}}\n        username: {field: username}\n")
    code, text = validate(cli, HEAD + user("app-orders", pair, "[rc]"))
    assert code == 0, text
    code, text = validate(cli, HEAD + user("app-orders", current() + previous(), "[rc]"))
    assert code == 1
    assert "one password per Cloud user): rotate through a pair -- rotate: {usernames: [NAME_A, NAME_B]} and username: {field: username}" in text
    code, text = validate(cli, HEAD + user("app-orders", "      - id: x\n        secret: {env: X}\n        username: {field: username}\n", "[rc]"))
    assert code == 1 and "username: {field: username} reads the token's vault version; the entry needs a vault: secret" in text


@pytest.mark.parametrize(("snippet", "message"), [
    ("        rotate: {every_days: 0}\n", "users.app-orders.tokens[0].rotate.every_days"),
    ("        rotate: {every_days: 30, usernames: [only-one]}\n", "users.app-orders.tokens[0].rotate.usernames"),
    ("        rotate: {every: 30}\n", "users.app-orders.tokens[0].rotate"),
    # Past any date a clock can hold: rotate and drift would fail on the arithmetic.
    ("        rotate: {every_days: 99999999999}\n", "users.app-orders.tokens[0].rotate.every_days: must be <= 36500"),
])
def test_schema(cli: Cli, snippet: str, message: str) -> None:
    code, text = validate(cli, HEAD + user("app-orders", current(extra=snippet) + previous()))
    assert code == 1 and f": {message}" in text, text


def test_an_overlap_past_any_date_is_refused(cli: Cli) -> None:
    code, text = validate(cli, HEAD.replace("instances:", "policies: {min_overlap_hours: 99999999999999}\ninstances:", 1)
                          + user("app-orders", current() + previous()))
    assert code == 1 and ": policies.min_overlap_hours: must be <= 876000" in text, text


def test_min_overlap_hours_is_a_policy(cli: Cli) -> None:
    body = user("app-orders", current() + previous())
    assert validate(cli, HEAD.replace("instances:", "policies: {min_overlap_hours: 0}\ninstances:", 1) + body)[0] == 0
    code, text = validate(cli, HEAD.replace("instances:", "policies: {min_overlap_hours: -1}\ninstances:", 1) + body)
    assert code == 1 and ": policies.min_overlap_hours: " in text


def test_rotate_names_an_unknown_user(cli: Cli) -> None:
    (cli.dir / "orders.token").write_text("orders-file-token-0123456789abcdef\n")
    (cli.dir / "orders.token").chmod(0o600)
    cli.write("version: 1\ninstances:\n  cache:\n    nodes: [\"10.0.0.5:6379\"]\nusers:\n"
              + user("app-orders", "      - id: current\n        secret: {file: orders.token}\n        rotate: {every_days: 30}\n"))
    code, _, err = cli("rotate", "-f", str(cli.file), "--user", "nobody")
    assert code == 1 and "--user nobody: no token of that user in" in err and "has rotate:" in err


# -- the pure parts ------------------------------------------------------------------------------


NOW = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)


def test_schedule_and_overlap() -> None:
    made = NOW - timedelta(days=29, hours=23)
    assert not rotation.schedule(30, made, NOW, asked=False).due
    assert rotation.schedule(30, made, NOW, asked=False).why == "next due 2026-12-04T13:00:00Z"
    assert rotation.schedule(30, made, NOW + timedelta(hours=1), asked=False).due
    assert rotation.schedule(30, NOW, NOW, asked=True).due
    assert rotation.schedule(30, None, NOW, asked=False).due  # a version of unknown age
    assert rotation.overlap_problem(NOW - timedelta(hours=23), NOW, Policies()) is not None
    assert rotation.overlap_problem(NOW - timedelta(hours=24), NOW, Policies()) is None
    assert rotation.overlap_problem(NOW, NOW, Policies(min_overlap_hours=0)) is None


@pytest.mark.parametrize("providers", [["redis"], ["redis-software"], ["redis-cloud"], ["redis", "redis-software", "redis-cloud"]])
def test_new_tokens_meet_every_provider(providers: list[str]) -> None:
    for _ in range(200):
        value = tokengen.new_token("app-orders", providers, Policies())
        assert 16 <= len(value) <= 128
        assert any(c.isupper() for c in value) and any(c.islower() for c in value) and any(c.isdigit() for c in value)
        assert set(value) & set("-_")
        if "redis-software" in providers:
            assert software_rules.password_problem(value, "app-orders") is None
    assert len(tokengen.new_token("default", ["redis-cloud"], Policies())) < 50  # a database password
    assert len(tokengen.new_token("app", ["redis"], Policies(min_token_length=64))) >= 64
    with pytest.raises(Exception, match="longer than provider redis-cloud takes"):
        tokengen.new_token("app", ["redis-cloud"], Policies(min_token_length=200))


def test_two_rotating_tokens_on_one_vault_path_are_refused(cli: Cli) -> None:
    """Each rotation writes a version of the whole path: the other field's `version: -1` would then
    read what its latest holds (the same token twice) and the file would no longer load."""
    reader = current().replace("field: token", "field: reader") + previous().replace("field: token", "field: reader")
    writer = current().replace("field: token", "field: writer") + previous().replace("field: token", "field: writer")
    code, text = validate(cli, HEAD + user("app-reader", reader) + user("app-writer", writer))
    assert code == 1
    assert (": users.app-writer.tokens[0].rotate: token current of user app-writer rotates a field of vault path "
            "secret/apps/orders, whose versions token current of user app-reader (line ") in text, text
    code, text = validate(cli, HEAD + user("app-reader", reader) + user("app-writer", writer.replace("apps/orders", "apps/writer")))
    assert code == 0, text


def test_expires_on_a_rotating_entry_is_refused(cli: Cli) -> None:
    """The file never changes on a rotation: a fixed date would expire the newest token, and the
    apply after it would remove the token apps hold."""
    code, text = validate(cli, HEAD + user("app-orders", current(extra="        rotate: {every_days: 30}\n        expires: 2027-01-01\n")
                                           + previous()))
    assert code == 1
    assert (": users.app-orders.tokens[0].expires: token current of user app-orders: expires: on a rotating entry would "
            "expire every new token on that same date") in text, text


def test_the_id_of_a_rotating_files_previous_value_is_taken(cli: Cli) -> None:
    """A rotating file: secret's PATH.previous is the token `<id>.previous`: declaring that id too
    would give the user two tokens of one id once the file has rotated."""
    tokens = ("      - id: current\n        secret: {file: orders.token}\n        rotate: {every_days: 30}\n"
              "      - id: current.previous\n        secret: {env: OTHER}\n")
    code, text = validate(cli, HEAD + user("app-orders", tokens))
    assert code == 1
    assert (": users.app-orders.tokens[1].id: token id 'current.previous' of user app-orders is the value before the last "
            "rotation of token current (its file's .previous): choose another id") in text, text
