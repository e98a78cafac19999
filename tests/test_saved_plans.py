"""A saved plan executes only what the file and the live state produce, for every provider.

`apply PLAN.json` re-plans and compares the whole typed plan (saved.differences): one table of
hand edits -- a certificate given, a kept token turned into a removal, a hash swapped, rules
widened, a user renamed, added or dropped, a setting, an inventory entry, a finding -- is
refused with nothing written, on a real Valkey (provider: redis) and on the contract servers of
Redis Software, Memorystore and Redis Cloud. The untouched plan then applies. A pure test walks
every field of every plan class: each is compared unless saved.DISPLAY_ONLY names it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from fake_memorystore import INSTANCE, FakeMemorystore
from fake_redis_cloud import FakeRedisCloud
from fake_redis_software import FakeRedisSoftware
from servers import RunningServer
from support.cli import Cli

from reconciler import saved
from reconciler.plan import (
    Action,
    ConfigChange,
    DeltaLine,
    Finding,
    FindingKind,
    InstancePlan,
    InventoryChange,
    NodePlan,
    PasswordStrategy,
    Plan,
    Rail,
    Refusal,
    Severity,
    TokenAction,
    TokenChange,
    UserChange,
)

OLD = "Old-Saved-Token-0123456789ab!"
NEW = "New-Saved-Token-0123456789cd?"
ADMIN = "Admin-Saved-Secret-0123456789!"
ATTACKER = hashlib.sha256(b"attacker-chosen").hexdigest()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- the table of edits: each takes the saved JSON and the instance's name and edits it in place --


def _change(doc: dict, inst: str) -> dict:
    node = _node(doc, inst)
    return next(c for c in node["changes"] if c["user"] == "app-orders")


def _node(doc: dict, inst: str) -> dict:
    return next(i for i in doc["instances"] if i["name"] == inst)["nodes"][0]


def _instance(doc: dict, inst: str) -> dict:
    return next(i for i in doc["instances"] if i["name"] == inst)


def _keep_to_remove(doc: dict, inst: str) -> None:
    kept = [t for t in _change(doc, inst)["tokens"] if t["action"] == "keep"]
    assert kept, "the rotation plan keeps the old token"
    kept[0]["action"] = "remove"


def _token_added(doc: dict, inst: str) -> None:
    c = _change(doc, inst)
    c["tokens"].append({"action": "add", "sha256": ATTACKER, "token_id": "evil", "reason": "", "expires": None})
    c["hashes"].append(ATTACKER)


def _change_added(doc: dict, inst: str) -> None:
    node = _node(doc, inst)
    node["changes"].append(dict(_change(doc, inst), user="evil", nopass=True, hashes=[], rules="~* &* +@all"))


EDITS: dict[str, Callable[[dict, str], None]] = {
    "certificate given": lambda d, i: _change(d, i).update(certificates=["CN=mallory"]),
    "kept token removed": _keep_to_remove,
    "token added": _token_added,
    "hash replaced": lambda d, i: _change(d, i)["hashes"].__setitem__(0, ATTACKER),
    "rules widened": lambda d, i: _change(d, i).update(rules="~* &* +@all"),
    "nopass": lambda d, i: _change(d, i).update(nopass=True),
    "disabled": lambda d, i: _change(d, i).update(enabled=False),
    "passwords replaced at once": lambda d, i: _change(d, i).update(
        passwords="each" if _change(d, i)["passwords"] == "replace-all" else "replace-all"
    ),
    "sessions killed": lambda d, i: _change(d, i).update(kill_sessions=not _change(d, i)["kill_sessions"]),
    "user renamed": lambda d, i: _change(d, i).update(user="mallory"),
    "change added": _change_added,
    "change dropped": lambda d, i: _node(d, i)["changes"].remove(_change(d, i)),
    "action changed": lambda d, i: _change(d, i).update(action="create" if _change(d, i)["action"] != "create" else "update"),
    "permission words edited": lambda d, i: _change(d, i).update(permissions=[{"sign": "-", "text": "revokes FLUSHALL"}]),
    "token id renamed": lambda d, i: _change(d, i)["tokens"][0].update(token_id="mallory"),
    "persist skipped": lambda d, i: _node(d, i).update(persist="none" if _node(d, i)["persist"] != "none" else "acl-save"),
    "setting added": lambda d, i: _node(d, i)["config"].append(
        {"parameter": "tls-auth-clients", "before": "yes", "after": "optional", "rewrite": False, "via": "CONFIG SET"}
    ),
    "pending work added": lambda d, i: _node(d, i).update(pending=["kill-sessions app-orders"]),
    "node moved": lambda d, i: _node(d, i).update(address="10.9.9.9:6379"),
    "fingerprint replaced": lambda d, i: _node(d, i).update(fingerprint="0" * 64),
    "certificate inventory added": lambda d, i: _instance(d, i)["inventory"].append(
        {"action": "add", "user": "app-orders", "subject": "CN=mallory", "sha256": ATTACKER, "expires": None, "cert_file": None}
    ),
    "finding added": lambda d, i: _instance(d, i)["findings"].append(
        {"kind": "nopass", "message": "x", "instance": i, "node": "", "user": "default", "token_id": "", "severity": "warning"}
    ),
    # (Dropping a whole instance is not in the table: a plan may cover fewer instances than the
    # file, as `plan --instance` makes it, and then nothing runs there.)
    "instance renamed": lambda d, i: _instance(d, i).update(name="other"),
}


# -- each provider: a file whose second step is a rotation (add NEW, keep OLD) ---------------------


def _ids(step: int) -> list[str]:
    """Step 1: the old token; step 2: a rotation (the new one added, the old one kept)."""
    return (["new"] if step == 2 else []) + ["old"]


def _secret_tokens(step: int) -> str:
    return "".join(f"      - {{id: {t}, secret: {{env: T_{t.upper()}}}}}\n" for t in _ids(step))


class Site:
    """One provider's instance: write the file at step 1 (OLD) or 2 (OLD + NEW), and say whether
    anything was written since `mark()`."""

    name = ""

    def __init__(self, cli: Cli):
        self.cli = cli

    def text(self, step: int) -> str:
        raise NotImplementedError

    def mark(self) -> None:
        raise NotImplementedError

    def untouched(self) -> bool:
        raise NotImplementedError


class RedisSite(Site):
    name = "cache"

    def __init__(self, cli: Cli, srv: RunningServer):
        super().__init__(cli)
        self.srv = srv
        srv.admin().execute_command("ACL", "SETUSER", "admin", "on", f">{ADMIN}", "~*", "&*", "+@all")
        self.before: list[str] = []

    def text(self, step: int) -> str:
        tokens = _secret_tokens(step)
        return f"""version: 1
instances:
  cache:
    nodes: ["{self.srv.address}"]
    admin: {{username: admin, secret: {{env: T_ADMIN}}}}
    persist: none
users:
  admin:
    acl: "~* &* +@all"
    tokens: [{{id: a, secret: {{env: T_ADMIN}}}}]
  app-orders:
    acl: "~orders:* +get"
    tokens:
{tokens}"""

    def mark(self) -> None:
        self.before = sorted(self.srv.admin().execute_command("ACL", "LIST"))

    def untouched(self) -> bool:
        return sorted(self.srv.admin().execute_command("ACL", "LIST")) == self.before


class HttpSite(Site):
    """Managed providers: nothing written = no request but GETs since mark()."""

    fake: Any

    def mark(self) -> None:
        self.seen = len(self.fake.http.log)

    def untouched(self) -> bool:
        return all(method == "GET" for method, _, _ in self.fake.http.log[self.seen :])


class SoftwareSite(HttpSite):
    name = "rs"

    def __init__(self, cli: Cli, fake: FakeRedisSoftware):
        super().__init__(cli)
        self.fake = fake

    def text(self, step: int) -> str:
        tokens = _secret_tokens(step)
        return f"""version: 1
instances:
  rs:
    provider: redis-software
    api: {{url: "{self.fake.url}", database: 1}}
    tls: {{ca_file: "{self.fake.ca_file}"}}
    admin: {{username: admin@example.com, secret: {{env: T_ADMIN}}}}
users:
  app-orders:
    acl: "~orders:* +@read"
    tokens:
{tokens}"""


class MemorystoreSite(HttpSite):
    name = "ms"

    def __init__(self, cli: Cli, fake: FakeMemorystore):
        super().__init__(cli)
        self.fake = fake
        (cli.dir / "sinks").mkdir()

    def text(self, step: int) -> str:
        tokens = "".join(f"      - {{id: {t}, sink: {{file: sinks/{t}.token}}}}\n" for t in _ids(step))
        return f"""version: 1
instances:
  ms:
    provider: memorystore
    api: {{url: "{self.fake.url}", instance: {INSTANCE}, ca_file: "{self.fake.ca_file}"}}
    admin: {{secret: {{env: T_ADMIN}}}}
users:
  app-orders:
    tokens:
{tokens}"""


class CloudSite(HttpSite):
    name = "rc"

    def __init__(self, cli: Cli, fake: FakeRedisCloud):
        super().__init__(cli)
        self.fake = fake

    def text(self, step: int) -> str:
        new = "      - {id: new, secret: {env: T_NEW}, username: app-orders-b}\n" if step == 2 else ""
        return f"""version: 1
instances:
  rc:
    provider: redis-cloud
    api: {{url: "{self.fake.url}", subscription: {self.fake.subscription}, database: {self.fake.database}, ca_file: "{self.fake.ca_file}"}}
    admin: {{account_key: {{env: RC_ACCOUNT}}, secret: {{env: RC_SECRET}}}}
users:
  app-orders:
    acl: "~orders:* +@read"
    tokens:
      - {{id: old, secret: {{env: T_OLD}}}}
{new}"""


PROVIDERS = ["redis:redis-7.0", "redis:valkey-9.1", "redis-software", "memorystore", "redis-cloud"]


@pytest.fixture(params=[pytest.param(p, marks=pytest.mark.server) if p.startswith("redis:") else p for p in PROVIDERS])
def site(request: pytest.FixtureRequest, server_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> Iterator[Site]:
    for k, v in {"T_OLD": OLD, "T_NEW": NEW, "NO_COLOR": "1", "RECONCILER_TODAY": "2026-11-23",
                 "RECONCILER_HTTP_BACKOFF": "0.01", "RECONCILER_POLL_START": "0.01", "RECONCILER_POLL_CAP": "0.04"}.items():
        monkeypatch.setenv(k, v)
    cli = Cli(tmp_path, capsys=capsys)
    if request.param.startswith("redis:"):
        monkeypatch.setenv("T_ADMIN", ADMIN)
        yield RedisSite(cli, server_factory(request.param.split(":", 1)[1]))
        return
    if request.param == "redis-software":
        monkeypatch.setenv("T_ADMIN", ADMIN)
        rs = FakeRedisSoftware(admin=("admin@example.com", ADMIN))
        try:
            yield SoftwareSite(cli, rs)
        finally:
            rs.stop()
        return
    if request.param == "memorystore":
        from reconciler.providers.memorystore import client as memorystore_client

        monkeypatch.setattr(memorystore_client, "QUOTA", (10_000, 60.0))
        monkeypatch.setenv("T_ADMIN", "ya29.saved-plan-access-token")
        ms = FakeMemorystore(access_token="ya29.saved-plan-access-token", authorization_mode="TOKEN_AUTH")
        try:
            yield MemorystoreSite(cli, ms)
        finally:
            ms.stop()
        return
    rc = FakeRedisCloud()
    monkeypatch.setenv("RC_ACCOUNT", rc.account_key)
    monkeypatch.setenv("RC_SECRET", rc.secret_key)
    try:
        yield CloudSite(cli, rc)
    finally:
        rc.stop()


def test_every_edit_of_a_saved_plan_is_refused_for_every_provider(site: Site, tmp_path: Path) -> None:
    cli = site.cli
    cli.write(site.text(1))
    cli.apply(expect=0)
    cli.write(site.text(2))
    plan_file = tmp_path / "plan.json"
    cli("plan", "-f", str(cli.file), "--out", str(plan_file), expect=0)
    original = json.loads(plan_file.read_text())
    edited = tmp_path / "edited.json"
    refused = []
    for name, edit in EDITS.items():
        doc = copy.deepcopy(original)
        edit(doc, site.name)
        assert doc != original, name
        edited.write_text(json.dumps(doc))
        site.mark()
        code, out, err = cli("apply", str(edited), "--auto-approve")
        assert code == 1 and "is stale" in err and "nothing was changed" in err, (name, out, err)
        assert site.untouched(), f"{name}: written although refused"
        refused.append(name)
    assert refused == list(EDITS)

    # Display-only fields (a note, a connection count, a finding's words) do not block the plan,
    # and what is shown and run is the fresh plan: the edited words never reach the output.
    doc = copy.deepcopy(original)
    _change(doc, site.name).update(note="TAMPERED NOTE", connections=99)
    doc["today"] = "1999-01-01"
    edited.write_text(json.dumps(doc))
    code, out, err = cli("apply", str(edited), "--auto-approve")
    assert code == 0, err
    assert "TAMPERED" not in out + err and "99 open" not in out
    assert cli.plan()[0] == 0


# -- every field of every plan class is compared, unless DISPLAY_ONLY names it --------------------


def _sample_plan() -> Plan:
    token = TokenChange(TokenAction.KEEP, "a" * 64, "t1", reason="kept", expires="2027-01-01")
    change = UserChange(
        action=Action.UPDATE, user="app", enabled=True, nopass=False, hashes=("a" * 64,), rules="~k +get",
        enabled_before=False, tokens=(token,), permissions=(DeltaLine("+", "grants GET"),), certificates=("CN=app",),
        kill_sessions=True, connections=2, note="n", passwords=PasswordStrategy.EACH,
    )
    node = NodePlan(
        address="10.0.0.1:6379", role="primary", label="Valkey 9.1.2", fingerprint="f" * 64, changes=(change,),
        persist="acl-save", config=(ConfigChange("tls-auth-clients", "no", "optional", rewrite=True),), pending=("persist",),
    )
    inst = InstancePlan(
        name="cache", topology="standalone", nodes=(node,),
        findings=(Finding(FindingKind.TOKEN_AGE, "old", "cache", "10.0.0.1:6379", "app", "t1", Severity.WARNING),),
        inventory=(InventoryChange(TokenAction.ADD, "app", "CN=app", "b" * 64, "2027-01-01", "app.pem"),),
    )
    return Plan(
        source="access.yaml", instances=(inst,), today="2026-11-23", source_sha256="c" * 64,
        refusals=(Refusal(Rail.DELETE_THRESHOLD, "m", waived=True),), targets=("app",),
    )


def _other(value: Any) -> Any:
    if isinstance(value, Enum):
        return next(m for m in type(value) if m != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if value is None:
        return "x"
    if isinstance(value, tuple):
        return value[:-1] if value else ("x",)
    raise AssertionError(f"no edit for {value!r}")


def _edits(obj: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """(path, edited copy of obj) for every field of every dataclass in obj."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        yield (*path, type(obj).__name__, f.name), dataclasses.replace(obj, **{f.name: _other(value)})
        if f.name in saved.DISPLAY_ONLY.get(type(obj), ()):
            continue  # what a display-only field holds is not compared either
        items = value if isinstance(value, tuple) else (value,)
        for i, item in enumerate(items):
            if dataclasses.is_dataclass(item):
                for sub, edited in _edits(item, (*path, type(obj).__name__, f.name, i)):
                    new = (*items[:i], edited, *items[i + 1 :]) if isinstance(value, tuple) else edited
                    yield sub, dataclasses.replace(obj, **{f.name: new})


def test_every_plan_field_is_compared_unless_display_only() -> None:
    plan = _sample_plan()
    display = {(cls.__name__, name) for cls, names in saved.DISPLAY_ONLY.items() for name in names}
    assert display == {
        ("Plan", "source"), ("Plan", "today"), ("Plan", "source_sha256"), ("Plan", "format_version"),
        ("Plan", "refusals"),  # the rails judge the fresh plan at apply; a saved verdict is not trusted
        ("UserChange", "connections"), ("UserChange", "note"), ("Finding", "message"),
    }
    seen = set()
    for path, edited in _edits(plan):
        field = (path[-2], path[-1])
        seen.add(field)
        # Through JSON, as a saved plan travels (format_version is checked when the file is read).
        if field == ("Plan", "format_version"):
            continue
        reloaded = Plan.from_json(json.loads(edited.dumps()))
        found = saved.differences(reloaded, plan)
        if field in display:
            assert found == [], (path, found)
        else:
            assert found, f"an edit of {'.'.join(map(str, path))} went unnoticed"
    every = {(cls.__name__, f.name) for cls in (Plan, InstancePlan, NodePlan, UserChange, TokenChange, DeltaLine,
                                                ConfigChange, InventoryChange, Finding) for f in dataclasses.fields(cls)}
    assert seen == every


def test_plan_out_never_overwrites_the_file_it_plans(server_factory, tmp_path: Path, capsys) -> None:
    """`plan -f access.yaml --out access.yaml` (a slip of tab completion) used to replace the
    desired-state file with the plan's JSON (mode 0600 too); now one line, the file intact,
    before any server is read. A link to it is the same file; the records kept beside it are
    refused too."""
    srv = server_factory("valkey-9.1")
    cli = Cli(tmp_path, capsys=capsys)
    text = f"version: 1\ninstances:\n  cache:\n    nodes: ['{srv.address}']\n    admin: {{username: default}}\nusers:\n  app:\n    acl: '+get'\n"
    cli.write(text)
    (tmp_path / "link.yaml").symlink_to(cli.file)
    for out in (cli.file, tmp_path / "link.yaml"):
        code, stdout, err = cli("plan", "-f", str(cli.file), "--out", str(out))
        assert code == 1 and stdout == "", err
        assert err == f"reconciler: --out {out} is the desired-state file itself; save the plan under another name (e.g. plan.json)\n"
    assert cli.file.read_text() == text
    # Nor a record kept beside it: the next plan would find the plan's JSON as its inventory.
    for record in ("access.inventory.json", "access.pending.json", "access.redis-software.json"):
        code, _, err = cli("plan", "-f", str(cli.file), "--out", str(tmp_path / record))
        assert code == 1 and f"is a record reconciler keeps beside {cli.file}; save the plan under another name" in err, err
        assert not (tmp_path / record).exists()
    code, _, err = cli("plan", "-f", str(cli.file), "--out", str(tmp_path / "access.plan.json"))
    assert code == 0 and (tmp_path / "access.plan.json").exists(), err
