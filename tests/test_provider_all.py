"""One desired-state file, three providers: a real Valkey server (provider: redis), the Redis
Software contract server and the Memorystore contract server. The same rotation workflow --
add a token, move apps, remove the old one -- runs through all three at once, and no secret
(token plaintext, admin password, access token, service-generated token) shows up in any
output, saved plan, audit record or provider record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import pytest
import redis
from fake_memorystore import INSTANCE, FakeMemorystore
from fake_redis_software import FakeRedisSoftware
from servers import RunningServer

from reconciler.cli import main

RS_ADMIN = "Admin-Secret-1!"
MS_ACCESS = "ya29.all-providers-access-token-42"
OLD = "Old-Token-all-0123456789abcdef!"
NEW = "New-Token-all-0123456789abcdef!"
SECRETS = (RS_ADMIN, MS_ACCESS, OLD, NEW)


@pytest.fixture
def fakes() -> Iterator[tuple[FakeRedisSoftware, FakeMemorystore]]:
    rs, ms = FakeRedisSoftware(admin=("admin@example.com", RS_ADMIN)), FakeMemorystore(access_token=MS_ACCESS, authorization_mode="TOKEN_AUTH")
    try:
        yield rs, ms
    finally:
        rs.stop()
        ms.stop()


@pytest.mark.server
def test_rotation_through_every_provider(
    server_factory: Callable[..., RunningServer],
    fakes: tuple[FakeRedisSoftware, FakeMemorystore],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    srv = server_factory("valkey-9.1")
    rs, ms = fakes
    for k, v in {"RS_ADMIN": RS_ADMIN, "MS_TOKEN": MS_ACCESS, "OLD": OLD, "NEW": NEW, "NODE": srv.address}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("RECONCILER_TODAY", "2026-11-23")
    monkeypatch.setenv("RECONCILER_POLL_START", "0.01")
    from reconciler.providers.memorystore import client as memorystore_client

    monkeypatch.setattr(memorystore_client, "QUOTA", (10_000, 60.0))  # the quota has its own test
    (tmp_path / "sinks").mkdir()
    f = tmp_path / "access.yaml"
    audit = tmp_path / "audit.jsonl"
    outputs: list[str] = []

    def doc(secret_tokens: list[str], sink_tokens: list[str]) -> str:
        env = {"2026-08": "OLD", "2026-11": "NEW"}
        secret = "".join(f"      - id: {t}\n        secret: {{env: {env[t]}}}\n" for t in secret_tokens)
        sink = "".join(f"      - id: {t}\n        sink: {{file: sinks/{t}.token}}\n" for t in sink_tokens)
        return f"""version: 1
audit_log: audit.jsonl
instances:
  cache:
    nodes: [{{env: NODE}}]
    persist: none
  rs:
    provider: redis-software
    api: {{url: "{rs.url}", database: 1}}
    tls: {{ca_file: "{rs.ca_file}"}}
    admin: {{username: admin@example.com, secret: {{env: RS_ADMIN}}}}
  ms:
    provider: memorystore
    api: {{url: "{ms.url}", instance: {INSTANCE}, ca_file: "{ms.ca_file}"}}
    admin: {{secret: {{env: MS_TOKEN}}}}
users:
  app-orders:
    instances: [cache, rs]
    acl: "~orders:* +@read +@write -@dangerous"
    tokens:
{secret}  app-reports:
    instances: [ms]
    tokens:
{sink}"""

    def cli(*argv: str) -> int:
        rc = main(list(argv))
        out, err = capsys.readouterr()
        outputs.append(out + err)
        assert "Traceback" not in err, err
        return rc

    def step(text: str) -> None:
        f.write_text(text)
        assert cli("plan", "-f", str(f), "--detailed-exitcode", "--out", str(tmp_path / "plan.json")) == 2
        outputs.append((tmp_path / "plan.json").read_text())
        assert cli("plan", "-f", str(f), "--format", "json") == 0
        assert cli("apply", "-f", str(f), "--auto-approve") == 0, outputs[-1]
        assert cli("plan", "-f", str(f), "--detailed-exitcode") == 0, outputs[-1]  # converged: no-op
        assert cli("drift", "-f", str(f), "--format", "json") in (0, 2)

    def can_login(password: str) -> bool:
        try:
            redis.Redis(host=srv.host, port=srv.port, username="app-orders", password=password, socket_timeout=2).ping()
            return True
        except redis.exceptions.NoPermissionError:
            return True  # logged in; PING is just not granted
        except redis.AuthenticationError:
            return False

    def ms_tokens() -> set[str]:
        """The file's ids of the service's tokens (the service names them; the record maps them)."""
        names = json.loads((tmp_path / "access.memorystore.json").read_text())["ms"]["app-reports"]
        return {fid for fid, name in names.items() if name in ms.users["app-reports"]}

    step(doc(["2026-08"], ["2026-08"]))
    assert can_login(OLD) and rs.has_password("app-orders", OLD) and ms_tokens() == {"2026-08"}

    # 1. add the new token everywhere (the old one stays)
    step(doc(["2026-11", "2026-08"], ["2026-11", "2026-08"]))
    assert can_login(OLD) and can_login(NEW)
    assert rs.has_password("app-orders", OLD) and rs.has_password("app-orders", NEW)
    assert ms_tokens() == {"2026-08", "2026-11"} and len(ms.users["app-reports"]) == 2
    # 2. apps move to the new token; 3. the old token leaves the file, and every service
    step(doc(["2026-11"], ["2026-11"]))
    assert can_login(NEW) and not can_login(OLD)
    assert rs.passwords[rs.by_name("app-orders")["uid"]] == [NEW]
    assert ms_tokens() == {"2026-11"} and len(ms.users["app-reports"]) == 1
    name = json.loads((tmp_path / "access.memorystore.json").read_text())["ms"]["app-reports"]["2026-11"]
    assert (tmp_path / "sinks" / "2026-11.token").read_text() == ms.token_value("app-reports", name) + "\n"

    # the grep: no secret anywhere the reconciler wrote or printed
    records = [audit, tmp_path / "access.redis-software.json", tmp_path / "access.memorystore.json"]
    blob = "\n".join(outputs) + "".join(p.read_text() for p in records)
    assert audit.read_text().strip() and json.loads(audit.read_text().splitlines()[0])["instance"]
    leaked = [s for s in (*SECRETS, *ms.generated) if s in blob]
    assert not leaked, f"{len(leaked)} secret(s) found in outputs or records"


def test_docs_provider_examples_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    docs = Path(__file__).resolve().parents[1] / "docs"
    blocks = {page: re.search(r"```yaml\n(.*?)```", (docs / page).read_text(), re.S).group(1) for page in ("redis-software.md", "memorystore.md")}
    for name in ("RS_ADMIN_PASSWORD", "GOOGLE_OAUTH_ACCESS_TOKEN", "CACHE_OPS_TOKEN"):
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("ORDERS_TOKEN_2026_11", "Readme-Token-2026-11-0123456789!")
    monkeypatch.setenv("ORDERS_TOKEN_2026_08", "Readme-Token-2026-08-0123456789!")
    for title, text in blocks.items():
        f = tmp_path / "readme.yaml"
        f.write_text(text)
        assert main(["validate", "-f", str(f)]) == 0, (title, capsys.readouterr().err)


# A minimal instance of each provider: enough for its token rules to be checked (other problems
# of these stubs, if any, don't matter to the test).
STUBS = {
    "redis": '    nodes: ["127.0.0.1:1"]\n',
    "redis-software": "    provider: redis-software\n    api: {url: \"https://127.0.0.1:1\", database: 1}\n",
    "memorystore": "    provider: memorystore\n    api: {instance: projects/p/locations/l/instances/i}\n",
    "redis-cloud": "    provider: redis-cloud\n    api: {subscription: 1, database: 1}\n",
}


@pytest.mark.parametrize("provider", sorted(STUBS))
@pytest.mark.parametrize("spelling", ["sha256", "secret", "sink"])
def test_token_kinds_follow_the_provider_capabilities(provider: str, spelling: str, tmp_path: Path) -> None:
    """Validation reads each provider's Capabilities: a token kind the provider lacks is one
    problem on that token naming the provider; a kind it has is no token problem."""
    from reconciler import config, providers
    from reconciler.errors import ConfigError

    token = {
        "sha256": "sha256: " + "a" * 64,
        "secret": "secret: {env: T_ANY}",
        "sink": "sink: {file: t.token}",
    }[spelling]
    f = tmp_path / "access.yaml"
    f.write_text(f"version: 1\ninstances:\n  x:\n{STUBS[provider]}users:\n  app:\n    acl: \"+get\"\n    tokens:\n      - id: t1\n        {token}\n")
    caps = providers.capabilities(provider)
    has = {"sha256": caps.token_hashes, "secret": caps.token_secrets, "sink": caps.server_generated_tokens}[spelling]
    try:
        config.load(str(f), resolve_secrets=False)
        problems = ""
    except ConfigError as exc:
        problems = str(exc)
    token_problems = [line for line in problems.splitlines() if "users.app.tokens[0]" in line and "token t1 of user app" in line]
    if has:
        assert token_problems == [], problems
    else:
        assert len(token_problems) == 1 and f"provider {provider}" in token_problems[0], problems
