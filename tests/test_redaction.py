"""Messages never contain secret values; the redactor is the backstop for what servers echo.

Short secrets are redacted only where they stand whole between quotes (how servers echo an
argument), so a message is never garbled and a redaction never tells a value by its position;
long ones wherever they occur. Secrets holding control characters are refused at load with
one line naming the reference, and the form a server echoes (CR/LF as spaces) is redacted too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.cli import Cli

from reconciler.errors import redact_secrets, remember_secret

FILE = """\
version: 1
instances:
  cache:
    nodes: ["{address}"]
    admin: {{username: reconciler, secret: {{env: T_RED_ADMIN}}}}
users:
  app:
    acl: "~app:* +@read"
    tokens:
      - id: app-1
        secret: {{env: APP_TOKEN}}
"""


@pytest.mark.parametrize(
    "value, line",
    [
        # The two cases: the value is part of a word of the message, not the message's content.
        ("short", "users.app.tokens[0].secret: token app-1 (env:APP_TOKEN) is shorter than policies.min_token_length (16)"),
        ("user", "access.yaml:9: users.app.tokens[0]: token app-1 of user app (env:APP_TOKEN)"),
        ("app-1", "token app-1 of user app"),  # whole words of our own wording: never replaced
    ],
)
def test_short_secrets_never_garble_a_message(value: str, line: str) -> None:
    remember_secret(value)
    assert redact_secrets(line) == line


def test_short_secret_echoed_as_an_argument_is_redacted() -> None:
    remember_secret("pw-7q2x")
    text = "unknown command 'AUTH', with args beginning with: 'reconciler' 'pw-7q2x' "
    assert redact_secrets(text) == "unknown command 'AUTH', with args beginning with: 'reconciler' '(redacted)' "
    assert redact_secrets('"pw-7q2x"') == '"(redacted)"'


def test_long_secrets_whole_or_cut() -> None:
    secret = "Long-secret-0123456789abcdef-XYZ"
    remember_secret(secret)
    assert redact_secrets(f"a{secret}b") == "a(redacted)b"
    assert redact_secrets(f"'{secret[:20]}'") == "'(redacted)'"  # a server cut it to 20 characters


def test_the_servers_whitespace_normalized_form_is_redacted() -> None:
    """Servers turn CR/LF of an echoed argument into spaces (rejectCommandFormat)."""
    secret = "line-one-secret-4f2a\r\nline-two"
    remember_secret(secret)
    echoed = "with args beginning with: 'reconciler' 'line-one-secret-4f2a  line-two' "
    assert redact_secrets(echoed) == "with args beginning with: 'reconciler' '(redacted)' "
    short = "ab\ncd"
    remember_secret(short)
    assert redact_secrets("'ab cd'") == "'(redacted)'"


@pytest.mark.parametrize("value", ["short", "user", "app"])
def test_short_token_errors_read_whole(value: str, tmp_path: Path, capsys, monkeypatch) -> None:
    """`APP_TOKEN=short` used to print "... is (redacted)er than policies.min_token_length"."""
    monkeypatch.setenv("APP_TOKEN", value)
    monkeypatch.setenv("T_RED_ADMIN", "admin-token-0123456789abcdef")
    cli = Cli(tmp_path, capsys=capsys)
    cli.write(FILE.format(address="127.0.0.1:1"))
    code, _, err = cli("validate", "--resolve-secrets", "-f", str(cli.file))
    assert code == 1
    assert err == (
        f"{cli.file}:11: users.app.tokens[0].secret: token app-1 of user app (env:APP_TOKEN) is shorter than "
        "policies.min_token_length (16, the default)\n"
    ), err
    assert "(redacted)" not in err


@pytest.mark.parametrize(
    "value, what",
    [("first\nsecond-part-of-it", "a line break"), ("crlf-part\r-0123456789ab", "a carriage return"),
     ("tab\there-0123456789abcdef", "a tab"), ("bell\x07-0123456789abcdef", "control character U+0007")],
)
def test_secrets_with_control_characters_are_refused_at_load(value: str, what: str, server_factory, tmp_path, monkeypatch) -> None:
    srv = server_factory("valkey-9.1")
    before = srv.admin().info("stats")["total_connections_received"]
    cli = Cli(tmp_path, env={"T_RED_ADMIN": "admin-token-0123456789abcdef", "APP_TOKEN": value})
    cli.write(FILE.format(address=srv.address))
    for argv in (("validate", "--resolve-secrets"), ("plan",), ("apply", "--auto-approve")):
        code, out, err = cli(*argv, "-f", "access.yaml")
        assert code == 1 and out == ""
        lines = err.strip().splitlines()
        assert lines == [
            f"access.yaml:11: users.app.tokens[0].secret: token app-1 of user app (env:APP_TOKEN): environment variable "
            f"APP_TOKEN holds {what}; a secret is one line of printable text"
        ], err
        assert not [part for part in re.split(r"[\x00-\x1f]", value) if len(part) >= 8 and part in err]
    # Refused before any connection: the server saw only this test's own INFO.
    assert srv.admin().info("stats")["total_connections_received"] == before + 1


def test_secret_file_with_a_nul_is_refused(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("T_RED_ADMIN", "admin-token-0123456789abcdef")
    (tmp_path / "app.token").write_bytes(b"nul\x00-0123456789abcdef\n")
    (tmp_path / "app.token").chmod(0o600)
    cli = Cli(tmp_path, capsys=capsys)
    cli.write(FILE.format(address="127.0.0.1:1").replace("{env: APP_TOKEN}", "{file: app.token}"))
    code, _, err = cli("validate", "--resolve-secrets", "-f", str(cli.file))
    assert code == 1 and "secret file app.token holds control character U+0000; a secret is one line" in err, err
    assert "0123456789abcdef" not in err


def test_bootstrap_secret_env_with_a_line_break_is_refused(server_factory, tmp_path, capsys, monkeypatch) -> None:
    srv = server_factory("valkey-9.1")
    monkeypatch.setenv("T_RED_ADMIN", "admin-token-0123456789abcdef")
    monkeypatch.setenv("APP_TOKEN", "app-token-0123456789abcdef")
    monkeypatch.setenv("T_RED_DEFAULT", "old-default\npassword")
    cli = Cli(tmp_path, capsys=capsys)
    cli.write(FILE.format(address=srv.address) + "  reconciler:\n    acl: '+@all ~* &*'\n    tokens: [{id: a, secret: {env: T_RED_ADMIN}}]\n")
    code, _, err = cli("apply", "-f", str(cli.file), "--bootstrap", "--bootstrap-secret-env", "T_RED_DEFAULT", "--auto-approve")
    assert code == 1
    assert "--bootstrap-secret-env T_RED_DEFAULT holds a line break; a secret is one line of printable text" in err
    assert "old-default" not in err
    assert srv.admin().execute_command("ACL", "USERS") == ["default"]  # nothing was written


@pytest.mark.parametrize("secret", ["x", "pw1", "pw12", "pw123456789"])
def test_a_short_admin_secret_the_server_echoes_is_redacted(secret: str, server_factory, tmp_path: Path) -> None:
    """Admin secrets are not tokens: no min_token_length refuses a short one. With AUTH renamed
    away the server echoes AUTH's arguments, quoted; a secret of 1 to 11 characters is
    redacted there like any other (1 to 3 used to be printed as they were)."""
    srv = server_factory("valkey-9.1", extra_config=[["rename-command", "AUTH", ""]])
    cli = Cli(tmp_path, env={"T_RED_ADMIN": secret, "APP_TOKEN": "app-token-0123456789abcdef"})
    cli.write(FILE.format(address=srv.address))
    for argv in (("plan",), ("apply", "--auto-approve"), ("drift",)):
        code, out, err = cli(*argv, "-f", "access.yaml")
        assert code == 1
        assert "with args beginning with: 'reconciler' '(redacted)'" in err, err  # the server did echo it
        assert f"'{secret}'" not in out + err
