"""Sinks for tokens a service makes: Memorystore's service-generated tokens written to a vault KV
path (a new version, check-and-set, other fields kept) against the Memorystore contract server
and a real OpenBao; a sink that can't take the value fails before the service makes a token."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_memorystore import FakeMemorystore
from openbao import READ_ONLY_POLICY, RunningBao
from support.cli import Cli
from test_provider_memorystore import access, env, fake  # noqa: F401 (fixtures: the contract server, its environment)

from reconciler.model import Sink
from reconciler.secrets import SecretError, sinks

KEEP = "sink-test-other-field-6e2a8c0f4b17"


def vault_sink(tid: str, field: str = "token") -> str:
    return f"      - id: {tid}\n        sink: {{vault: {{path: apps/cache, field: {field}}}}}\n"


def test_memorystore_tokens_go_to_a_vault_path(
    fake: FakeMemorystore, bao: RunningBao, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    for k, v in bao.env().items():
        monkeypatch.setenv(k, v)
    bao.put("apps/cache", {"note": KEEP})
    run = Cli(tmp_path, capsys=capsys)
    one = access(fake, vault_sink("2026-08"))
    code, out, err = run.apply(one)
    assert code == 0, out + err
    [service_token] = fake.users["app-orders"]
    value = fake.token_value("app-orders", service_token)
    stored = bao.get("apps/cache")
    assert stored["metadata"]["version"] == 2 and stored["data"] == {"note": KEEP, "token": value}
    assert value not in "".join(run.outputs)
    assert run.plan(one)[0] == 0
    # A second token to another field: a new version, the first token's field kept.
    two = access(fake, vault_sink("2026-11", "next") + vault_sink("2026-08"))
    code, out, err = run.apply(two)
    assert code == 0, out + err
    second = fake.token_value("app-orders", next(t for t in fake.users["app-orders"] if t != service_token))
    stored = bao.get("apps/cache")
    assert stored["metadata"]["version"] == 3 and stored["data"] == {"note": KEEP, "token": value, "next": second}
    assert second not in "".join(run.outputs)


def test_a_sink_that_cannot_be_written_stops_before_the_service_makes_a_token(
    fake: FakeMemorystore, bao: RunningBao, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    read_only = bao.token_with_policy("ro", READ_ONLY_POLICY)
    for k, v in bao.env(token=read_only).items():
        monkeypatch.setenv(k, v)
    bao.put("apps/cache", {"note": KEEP})
    run = Cli(tmp_path, capsys=capsys)
    code, out, err = run.apply(access(fake, vault_sink("2026-08")))
    assert code == 1
    assert "token 2026-08 of user app-orders: sink vault:secret/apps/cache#token: vault: permission denied: VAULT_TOKEN may not write secret/apps/cache" in err
    assert not fake.users.get("app-orders")  # no token the store could not hold
    assert bao.get("apps/cache")["metadata"]["version"] == 1


def test_file_sink_and_command_line_forms(tmp_path: Path) -> None:
    assert sinks.parse("vault:apps/orders#token") == Sink("vault", "apps/orders", "token", "secret")
    assert sinks.parse("vault:kv:/teams/a/#pw") == Sink("vault", "teams/a", "pw", "kv")
    assert sinks.parse("file:out.token") == Sink("file", "out.token")
    for bad in ("vault:apps/orders", "vault:#token", "vault:a/../b#t", "s3:x", "file:"):
        with pytest.raises(ValueError, match="expected vault:PATH#FIELD"):
            sinks.parse(bad)
    target = tmp_path / "t.token"
    prepared = sinks.prepare(Sink("file", str(target)))
    prepared.abort()
    assert list(tmp_path.iterdir()) == []  # never an empty sink left behind
    sinks.prepare(Sink("file", str(target))).commit("file-sink-value-1234567890")
    assert target.read_text() == "file-sink-value-1234567890\n" and target.stat().st_mode & 0o777 == 0o600
    sinks.prepare(Sink("file", str(target))).abort()
    assert target.read_text() == "file-sink-value-1234567890\n"  # a sink that took nothing keeps what it held
    assert list(tmp_path.iterdir()) == [target]
    with pytest.raises(SecretError, match=f"^file {tmp_path}/missing/t.token: No such file or directory$"):
        sinks.prepare(Sink("file", str(tmp_path / "missing" / "t.token")))  # the path the file names, not a temporary one
