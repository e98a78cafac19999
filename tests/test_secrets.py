"""Secret references ({env}, {file}) and the guarantee that plaintext never shows in str/repr."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import pickle
from datetime import date
from pathlib import Path

import pytest

from reconciler import secrets
from reconciler.config import load
from reconciler.errors import ConfigError
from reconciler.model import Secret

TODAY = date(2026, 11, 23)
PLAIN = {
    "ADMIN": "Adm1n-plaintext-AAAA",
    "APP": "App-plaintext-BBBB-1",
    "NODE": "127.0.0.1:6400",
}
FILE_PLAIN = "File-plaintext-CCCC-2"


def test_sha256_is_what_servers_store() -> None:
    assert secrets.sha256_hex("password") == hashlib.sha256(b"password").hexdigest()
    assert secrets.sha256_hex("pässword") == hashlib.sha256("pässword".encode()).hexdigest()


def test_resolve_env() -> None:
    r = secrets.resolve({"env": "T"}, "", environ={"T": "value-1"})
    assert (r.source, r.sha256, r.secret.reveal()) == ("env:T", secrets.sha256_hex("value-1"), "value-1")
    assert "value-1" not in repr(r) and "value-1" not in str(r)
    with pytest.raises(secrets.SecretError, match="^environment variable T is not set$"):
        secrets.resolve({"env": "T"}, "", environ={})
    with pytest.raises(secrets.SecretError, match="^environment variable T is empty$"):
        secrets.resolve({"env": "T"}, "", environ={"T": ""})


@pytest.mark.parametrize(
    "content, value",
    [(b"tok\n", "tok"), (b"tok", "tok"), (b"tok\r\n", "tok"), (b"tok\n\n", None), (b" tok \n", " tok ")],
)
def test_resolve_file_strips_one_newline(tmp_path: Path, content: bytes, value: str | None) -> None:
    f = tmp_path / "t.token"
    f.write_bytes(content)
    f.chmod(0o600)
    if value is None:
        with pytest.raises(secrets.SecretError, match="more than one line"):
            secrets.resolve({"file": "t.token"}, str(tmp_path))
        return
    r = secrets.resolve({"file": "t.token"}, str(tmp_path))
    assert r.secret.reveal() == value and r.source == "file:t.token"


def test_file_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "bin").write_bytes(b"\xff\xfe")
    (tmp_path / "dir").mkdir()
    cases = {
        "missing": "secret file missing not found",
        "empty": "secret file empty is empty",
        "bin": "secret file bin is not UTF-8 text",
        "dir": "secret file dir is not a regular file",
    }
    for name, message in cases.items():
        with pytest.raises(secrets.SecretError) as exc:
            secrets.resolve({"file": name}, str(tmp_path))
        assert str(exc.value) == message


READER = """
import sys, time
from reconciler import secrets
read = refused = 0
end = time.monotonic() + 3
while time.monotonic() < end:
    try:
        secrets.read_file(sys.argv[1], "target")
        read += 1
    except secrets.SecretError:
        refused += 1
print(read, refused)
"""


def test_a_secret_file_swapped_for_a_fifo_never_blocks(tmp_path: Path) -> None:
    # The path changes between a regular file and a FIFO thousands of times a second while a
    # process reads it: a read that opened the FIFO would wait for a writer for ever.
    import os
    import subprocess
    import sys
    import threading

    (tmp_path / "reg").write_text(FILE_PLAIN + "\n")
    os.mkfifo(tmp_path / "fifo")
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            for src in ("reg", "fifo"):
                os.link(tmp_path / src, tmp_path / "new")
                os.replace(tmp_path / "new", tmp_path / "target")

    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    try:
        p = subprocess.run([sys.executable, "-c", READER, str(tmp_path / "target")], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("a read of the secret file blocked on the FIFO")
    finally:
        stop.set()
        swapper.join()
    read, refused = map(int, p.stdout.split())
    assert read > 0 and refused > 0, p.stdout + p.stderr  # both kinds were seen: the race ran


def test_group_readable_file_warns_but_loads(tmp_path: Path, capsys) -> None:
    tok = tmp_path / "app.token"
    tok.write_text("Readable-token-1\n")
    tok.chmod(0o644)
    f = tmp_path / "a.yaml"
    f.write_text("version: 1\ninstances:\n  c: {nodes: ['h:1']}\nusers:\n  u:\n    tokens:\n      - {id: t, secret: {file: app.token}}\n")
    state = load(str(f), today=TODAY, environ={})
    assert state.users["u"].tokens[0].sha256 == secrets.sha256_hex("Readable-token-1")
    err = capsys.readouterr().err
    assert err == (
        f"{f}:7: users.u.tokens[0].secret: warning: secret file app.token is readable by group/others "
        "(mode 0644); run: chmod 600 app.token\n"
    )
    tok.chmod(0o600)
    load(str(f), today=TODAY, environ={})
    assert capsys.readouterr().err == ""


def test_problems_name_user_token_and_reference(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text(
        "version: 1\ninstances:\n  c: {nodes: ['h:1']}\nusers:\n  app-orders:\n    tokens:\n"
        "      - {id: 2026-11, secret: {env: ORDERS_TOKEN}}\n"
        "      - {id: 2026-08, secret: {file: secrets/orders-old.token}}\n"
    )
    with pytest.raises(ConfigError) as exc:
        load(str(f), today=TODAY, environ={})
    assert [str(p) for p in exc.value.problems] == [
        f"{f}:7: users.app-orders.tokens[0].secret: token 2026-11 of user app-orders (env:ORDERS_TOKEN): "
        "environment variable ORDERS_TOKEN is not set",
        f"{f}:8: users.app-orders.tokens[1].secret: token 2026-08 of user app-orders (file:secrets/orders-old.token): "
        "secret file secrets/orders-old.token not found",
    ]


def test_secret_object_refuses_to_leak() -> None:
    s = Secret("Leak-me-please-1")
    assert "Leak" not in repr(s) and "Leak" not in str(s) and "Leak" not in f"{s}" and "Leak" not in f"{s!r}"
    with pytest.raises(TypeError):
        pickle.dumps(s)
    assert copy.deepcopy(s) is s


def test_no_plaintext_anywhere_in_the_model(tmp_path: Path) -> None:
    (tmp_path / "app2.token").write_text(FILE_PLAIN + "\n")
    (tmp_path / "app2.token").chmod(0o600)
    f = tmp_path / "a.yaml"
    f.write_text(
        """\
version: 1
policies: {min_token_length: 8, password_complexity: true}
instances:
  c:
    nodes: [{env: NODE}]
    admin: {username: admin, secret: {env: ADMIN}}
users:
  admin:
    acl: "~* &* +@all"
    tokens: [{id: a, secret: {env: ADMIN}}]
  app:
    tokens:
      - {id: one, secret: {env: APP}, created: 2026-11-01}
      - {id: two, secret: {file: app2.token}}
"""
    )
    state = load(str(f), today=TODAY, environ=PLAIN)
    secrets_ = [PLAIN["ADMIN"], PLAIN["APP"], FILE_PLAIN]
    # the values are really there (so the test below could fail)...
    assert state.users["app"].tokens[1].plaintext.reveal() == FILE_PLAIN
    assert state.instances["c"].admin.secret.reveal() == PLAIN["ADMIN"]
    assert state.instances["c"].nodes == (PLAIN["NODE"],)
    # ...but no rendering of any object shows them.
    texts = [repr(state), str(state), str(dataclasses.asdict(state)), repr(vars(state))]

    def walk(obj, depth=0):
        if depth > 8:
            return
        texts.append(repr(obj))
        texts.append(str(obj))
        if dataclasses.is_dataclass(obj):
            for fld in dataclasses.fields(obj):
                walk(getattr(obj, fld.name), depth + 1)
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(k, depth + 1)
                walk(v, depth + 1)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v, depth + 1)

    walk(state)
    blob = "\n".join(texts)
    assert len(texts) > 50
    for value in secrets_:
        assert value not in blob


def test_policy_errors_do_not_echo_plaintext(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text(
        "version: 1\npolicies: {min_token_length: 64, password_complexity: true}\n"
        "instances:\n  c: {nodes: ['h:1']}\nusers:\n  u:\n    tokens: [{id: t, secret: {env: T}}]\n"
    )
    with pytest.raises(ConfigError) as exc:
        load(str(f), today=TODAY, environ={"T": "weakweak"})
    assert len(exc.value.problems) == 2
    assert "weakweak" not in str(exc.value)
