"""`reconciler token new`: strong token written once, YAML entry with its sha256 on stderr."""

from __future__ import annotations

import hashlib
import re
import stat
from pathlib import Path

from support.cli import Cli, Result

from reconciler.commands.token_new import strong_token


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    """As a subprocess: the token is printed where a shell would see it."""
    return Cli(Path.cwd(), env=env or {})(*args)


def test_token_to_file_is_private_and_bare(tmp_path):
    out = tmp_path / "app.token"
    r = run("token", "new", "app", "--id", "2026-11", "--out", str(out), env={"RECONCILER_TODAY": "2026-11-23"})
    assert r.code == 0, r.err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    content = out.read_text()
    assert content.endswith("\n") and content.count("\n") == 1
    token = content.strip()
    assert r.out == ""
    assert token not in r.err
    digest = re.search(r"sha256: ([0-9a-f]{64})", r.err).group(1)
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    assert "- id: 2026-11" in r.err
    assert "created: 2026-11-23" in r.err and "expires: 2027-02-21" in r.err


def test_token_printed_once_to_stdout():
    r = run("token", "new", "app", "--id", "x")
    assert r.code == 0
    token = r.out.strip()
    assert len(token) >= 43
    assert token not in r.err
    assert hashlib.sha256(token.encode()).hexdigest() in r.err


def test_refuses_to_overwrite(tmp_path):
    out = tmp_path / "t"
    out.write_text("keep me\n")
    r = run("token", "new", "app", "--id", "x", "--out", str(out))
    assert r.code == 1
    assert "Traceback" not in r.err and str(out) in r.err
    assert out.read_text() == "keep me\n"


def test_complexity_by_construction():
    for _ in range(200):
        t = strong_token(16)
        assert re.search(r"[A-Z]", t) and re.search(r"[a-z]", t) and re.search(r"[0-9]", t) and re.search(r"[-_]", t)


def test_out_in_a_missing_folder_says_so(tmp_path):
    target = tmp_path / "secrets" / "orders.token"
    r = run("token", "new", "app", "--id", "x", "--out", str(target))
    assert r.code == 1 and r.out == ""
    assert f"--out {target}: folder {target.parent} does not exist; create it first (mkdir -p -m 700 {target.parent})" in r.err
    assert "refusing to overwrite" not in r.err and not target.parent.exists()
    (tmp_path / "plain").write_text("")
    r = run("token", "new", "app", "--id", "x", "--out", str(tmp_path / "plain" / "t"))
    assert r.code == 1 and f"{tmp_path / 'plain'} is not a folder" in r.err
    r = run("token", "new", "app", "--id", "x", "--out", str(tmp_path / "t"))
    assert r.code == 0 and (tmp_path / "t").exists()
    r = run("token", "new", "app", "--id", "x", "--out", str(tmp_path / "t"))
    assert r.code == 1 and "already exists; refusing to overwrite it" in r.err


def test_user_and_id_must_have_the_files_form():
    r = run("token", "new", "bad user!", "--id", "x")
    assert r.code == 1 and r.out == ""  # no token was made
    assert "token new: user name 'bad user!': invalid username: use letters, digits and _ . : @ + = -" in r.err
    r = run("token", "new", "app", "--id", "2026 11")
    assert r.code == 1 and r.out == "" and "token new: --id '2026 11': expected a token id" in r.err


def test_with_a_file_the_user_must_be_declared_and_the_id_new(tmp_path):
    f = tmp_path / "access.yaml"
    f.write_text(
        "version: 1\ninstances:\n  cache:\n    nodes: ['127.0.0.1:6379']\n"
        "users:\n  app-orders:\n    acl: '+get'\n    tokens: [{id: 2026-08, secret: {env: ORDERS}}]\n"
    )
    r = run("token", "new", "app-order", "--id", "2026-11", "-f", str(f))
    assert r.code == 1 and r.out == ""
    assert f"token new: user app-order is not declared in {f} (did you mean 'app-orders'?)" in r.err
    r = run("token", "new", "reports", "--id", "2026-11", "-f", str(f))
    assert r.code == 1 and "user reports is not declared" in r.err and "declare it under users: first" in r.err
    r = run("token", "new", "app-orders", "--id", "2026-08", "-f", str(f), "--out", str(tmp_path / "t"))
    assert r.code == 1 and "already has a token with id 2026-08" in r.err and not (tmp_path / "t").exists()
    r = run("token", "new", "app-orders", "--id", "2026-11", "-f", str(f))
    assert r.code == 0 and "- id: 2026-11" in r.err


def test_a_max_age_past_any_date_is_a_file_error_not_a_crash(tmp_path):
    """The entry's `expires` is today + token_max_age_days: a value past any date the clock holds
    is refused by the file's schema (one line, file:line), never an internal error."""
    f = tmp_path / "access.yaml"
    f.write_text(
        "version: 1\npolicies: {token_max_age_days: 9999999}\ninstances:\n  cache:\n    nodes: ['127.0.0.1:6379']\n"
        "users:\n  app-orders:\n    acl: '+get'\n    tokens: [{id: 2026-08, secret: {env: ORDERS}}]\n"
    )
    r = run("token", "new", "app-orders", "--id", "2026-11", "-f", str(f), "--out", str(tmp_path / "t"))
    assert r.code == 1 and "internal error" not in r.err, r.err
    assert f"{f}:2: policies.token_max_age_days: must be <= 36500" in r.err, r.err
    assert not (tmp_path / "t").exists()


def test_a_length_too_long_to_read_back_is_refused_before_the_token_exists(tmp_path):
    """A token longer than a secret reference reads back would be written and then refused by
    every plan: refused first, nothing written."""
    out = tmp_path / "big.token"
    r = run("token", "new", "app-orders", "--id", "big", "--length", "60000", "--out", str(out))
    assert r.code == 1 and "--length must be at most 4096 bytes" in r.err and not out.exists(), r.err
    r = run("token", "new", "app-orders", "--id", "big", "--length", "4096", "--out", str(out))
    assert r.code == 0 and len(out.read_text().strip()) == 5462


def test_an_empty_out_or_sink_is_an_error_not_stdout(tmp_path):
    """`--out "$TOKEN_FILE"` with the variable unset: the token used to be printed on stdout
    (into whatever log the script writes); now one line, no token made."""
    for flag in ("--out", "--sink"):
        for value in ("", "  "):
            r = Cli(tmp_path, env={})("token", "new", "app", "--id", "x", flag, value)
            assert r.code == 1 and r.out == "", (flag, value, r.out)
            assert r.err == f"reconciler: token new: {flag} is empty; name where the token goes (or leave {flag} out to print it)\n"
    assert list(tmp_path.iterdir()) == []


def test_the_file_reference_resolves_from_the_files_folder(tmp_path):
    """`token new --out tokens/app.token -f config/access.yaml` run from the project root: the
    `file:` reference to paste is relative to config/ (where the file resolves it), so the pasted
    entry reads the token (it used to name tokens/app.token, which config/ does not have)."""
    (tmp_path / "config").mkdir()
    (tmp_path / "tokens").mkdir()
    f = tmp_path / "config" / "access.yaml"
    head = "version: 1\ninstances:\n  cache:\n    nodes: ['127.0.0.1:6379']\nusers:\n  app:\n    acl: '+get'\n"
    f.write_text(head)
    r = Cli(tmp_path, env={})("token", "new", "app", "--id", "t1", "--out", "tokens/app.token", "-f", "config/access.yaml")
    assert r.code == 0, r.err
    ref = re.search(r"secret: (\{file: [^}]+\})", r.err).group(1)
    assert ref == "{file: ../tokens/app.token}", r.err
    f.write_text(head + f"    tokens: [{{id: t1, secret: {ref}}}]\n")
    r = Cli(tmp_path, env={})("validate", "--resolve-secrets", "-f", "config/access.yaml")
    assert r.code == 0, r.err
