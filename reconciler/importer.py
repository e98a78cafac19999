"""`reconciler import`'s work: a complete desired-state file for what is live on one instance.

The file validates and plans as a no-op as it is: the instance (seed nodes, admin as a secret
reference, never a value), every user with `enabled`, its tokens as `sha256:` entries (the server
never holds plaintext), certificate-only users where the node maps certificates to users, and
each user's rules in the shortest form the engine proves equal on the node's version. Users with
identical rules share a role when that makes the file shorter. Replicas and cluster members are
discovered from one seed; users are read from the first primary.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import yaml

from . import acl
from .clock import today
from .errors import ConfigError, MoreProblems, Problem, ReconcilerError
from .manager import Manager
from .names import declarable, printable, shown, why_not_declarable
from .state import InstanceState, LiveUser, NodeState

_REQUIRED = {"yes": True, "no": False, "optional": "optional"}


@dataclass
class Imported:
    """What import writes, before YAML: kept as data so tests and the character count can use it."""

    instance: str
    instance_spec: dict[str, Any]
    users: dict[str, dict[str, Any]]
    roles: dict[str, str] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)  # user -> why it is not in the file
    header: list[str] = field(default_factory=list)


def _token_id(sha: str, taken: set[str]) -> str:
    """A stable id per token: its hash's first 8 hex digits (longer on a clash)."""
    n = 8
    while sha[:n] in taken and n < len(sha):
        n += 2
    taken.add(sha[:n])
    return sha[:n]


def _maps_certificates(node: NodeState) -> bool:
    return node.tls and node.capabilities.cert_user_mapping and node.tls_auth_clients_user == "CN"


def user_entry(u: LiveUser, rules: str, node: NodeState) -> tuple[dict[str, Any] | None, str]:
    """-> (entry, why it is left out). Entries carry `enabled` always, so the file says it."""
    if u.nopass:
        if u.name == "default":
            return None, "nopass (the file can only say so with auth_mode: none)"
        return None, "nopass: every password logs in; declare it with tokens to manage it"
    entry: dict[str, Any] = {"enabled": u.enabled, "acl": rules}
    taken: set[str] = set()
    if u.hashes:
        entry["tokens"] = [{"id": _token_id(h, taken), "sha256": h} for h in sorted(u.hashes)]
    elif _maps_certificates(node) and u.name != "default":
        entry["certificates"] = [{"subject": f"CN={u.name}"}]
    else:
        entry["tokens"] = []  # no password: nobody logs in with one (resetpass)
    return entry, ""


def _group_roles(users: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Identical rule strings become a role when that is shorter than repeating them."""
    counts = Counter(e["acl"] for e in users.values() if e["acl"])
    roles: dict[str, str] = {}
    for rules, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        name = f"role-{len(roles) + 1}"
        # inline: n x `acl: "<rules>"`; role: `name: "<rules>"` + n x `roles: [name]`
        inline = n * (len(rules) + 7)
        shared = len(name) + len(rules) + 4 + n * (len(name) + 9)
        if n > 1 and shared < inline:
            roles[name] = rules
    by_rules = {r: name for name, r in roles.items()}
    for entry in users.values():
        role = by_rules.get(entry["acl"])
        if role is not None:
            del entry["acl"]
            items = list(entry.items())
            entry.clear()
            entry.update({"enabled": items[0][1], "roles": [role]})
            entry.update(dict(items[1:]))
    return roles


def build(instance: str, spec: dict[str, Any], state: InstanceState) -> Imported:
    primaries = [n for n in state.nodes if n.role == "primary"]
    node = (primaries or list(state.nodes))[0]
    table = node.acl_table()
    spec = dict(spec)
    if _maps_certificates(node) and "tls_client_auth" not in spec and node.tls_auth_clients in _REQUIRED:
        spec["tls_client_auth"] = {"required": _REQUIRED[node.tls_auth_clients], "user_field": "CN"}
    out = Imported(instance, spec, {})
    for u in sorted(node.users.values(), key=lambda u: u.name):
        if not declarable(u.name):
            # It stays an unmanaged user (a finding; prune deletes it): the file can't name it.
            out.left_out[u.name] = why_not_declarable(u.name)
            continue
        try:
            rules = acl.shortest_rules(u.rules, table)
        except (acl.AclSyntaxError, acl.UnsupportedRule) as exc:
            out.left_out[u.name] = f"rules the engine can't read ({exc})"
            continue
        entry, why = user_entry(u, rules, node)
        if entry is None:
            out.left_out[u.name] = why
        else:
            out.users[u.name] = entry
    out.roles = _group_roles(out.users)
    members = f"{len(state.nodes)} node{'s' if len(state.nodes) != 1 else ''}"
    out.header = [
        f"# imported from {instance}: {node.address} ({node.label}, {state.topology}, {members}) on {today().isoformat()}",
        "# tokens are sha256 entries (servers hold no plaintext); rules are the shortest form equal on this version",
    ]
    for name, why in out.left_out.items():
        out.header.append(f"# not imported: {shown(name)}: {printable(why)}")
    differing = [n.address for n in state.nodes if n is not node and _users_differ(n, node, table)]
    if differing:
        out.header.append(f"# these nodes hold other users or rules than {node.address}: {', '.join(differing)}")
    return out


def _users_differ(a: NodeState, b: NodeState, table: Any) -> bool:
    if set(a.users) != set(b.users):
        return True
    ta = a.acl_table()
    for name, u in a.users.items():
        v = b.users[name]
        if (u.enabled, u.nopass, set(u.hashes)) != (v.enabled, v.nopass, set(v.hashes)):
            return True
        if ta.name == table.name and acl.effective(u.rules, ta) != acl.effective(v.rules, table):
            return True
    return False


def render(imp: Imported) -> str:
    doc: dict[str, Any] = {"version": 1, "instances": {imp.instance: imp.instance_spec}}
    if imp.roles:
        doc["roles"] = imp.roles
    doc["users"] = imp.users
    # ASCII only: a look-alike character in a rule is written as an escape a reviewer can see.
    body = yaml.safe_dump(doc, sort_keys=False, width=1000, default_flow_style=False, allow_unicode=False)
    return "\n".join(imp.header) + "\n" + body


# ---- the two ways in ----------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What to import, as the command line gives it: a seed node with an admin, or an instance
    of a desired-state file; and where the file goes (None: returned only)."""

    nodes: tuple[str, ...] = ()  # --node HOST:PORT, repeatable
    admin_user: str | None = None
    admin_secret_env: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_server_name: str | None = None
    name: str | None = None  # the instance's name in the file written (--node)
    file: str | None = None  # -f FILE with --instance N
    instance: str | None = None
    out: str | None = None
    force: bool = False  # --out may replace a file
    allow_exec: bool = False


def _from_node(req: Request, out_dir: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """-> (instance name, the spec to write, the spec to read with: TLS paths made absolute)."""
    if not req.admin_secret_env:
        raise ReconcilerError("import --node needs --admin-secret-env VAR (the admin's token is read from VAR)")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", req.admin_secret_env):
        raise ReconcilerError(f"--admin-secret-env {req.admin_secret_env!r} is not an environment variable name")
    if not os.environ.get(req.admin_secret_env):
        raise ReconcilerError(f"environment variable {req.admin_secret_env} is not set (the admin's token)")
    name = req.name or "imported"
    spec: dict[str, Any] = {"nodes": list(req.nodes)}
    read_spec: dict[str, Any] = {"nodes": list(req.nodes)}
    tls = {k: v for k, v in (("ca_file", req.tls_ca), ("cert_file", req.tls_cert), ("key_file", req.tls_key)) if v}
    if tls or req.tls_server_name:
        # Paths in the file are relative to the file's folder; on the command line, to the cwd.
        spec["tls"] = {k: os.path.relpath(os.path.abspath(v), out_dir) for k, v in tls.items()}
        read_spec["tls"] = {k: os.path.abspath(v) for k, v in tls.items()}
        if req.tls_server_name:
            spec["tls"]["server_name"] = read_spec["tls"]["server_name"] = req.tls_server_name
    admin = {"username": req.admin_user or "default", "secret": {"env": req.admin_secret_env}}
    spec["admin"] = read_spec["admin"] = admin
    return name, spec, read_spec


def _from_file(file: str, instance: str, out_dir: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    from .config import load

    # Only this instance's admin secret is needed (read below); the file's other secrets are not.
    desired = load(file, allow_expired=True, today=today(), resolve_secrets=False)
    if instance not in desired.instances:
        raise ReconcilerError(f"unknown instance {instance} (the file has: {', '.join(desired.instances)})")
    with open(file, encoding="utf-8") as fh:
        raw = (yaml.safe_load(fh) or {}).get("instances", {}).get(instance, {})
    spec = dict(raw)
    src_dir = os.path.dirname(os.path.abspath(file))
    read_spec = _rebase(spec, src_dir, None)
    return instance, _rebase(spec, src_dir, out_dir), read_spec


_PATH_KEYS = ("ca_file", "cert_file", "key_file", "file")


def _rebase(value: Any, src_dir: str, out_dir: str | None) -> Any:
    """File paths of the instance (tls files, {file:} secrets) for a file in out_dir (None: absolute)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in _PATH_KEYS and isinstance(v, str):
                full = v if os.path.isabs(v) else os.path.join(src_dir, os.path.expanduser(v))
                out[k] = full if out_dir is None else os.path.relpath(full, out_dir)
            else:
                out[k] = _rebase(v, src_dir, out_dir)
        return out
    if isinstance(value, list):
        return [_rebase(v, src_dir, out_dir) for v in value]
    return value


def read(name: str, read_spec: dict[str, Any], *, allow_exec: bool = False, base_dir: str | None = None,
         file: str | None = None) -> InstanceState:
    """Read the instance through the ordinary path (config.load, the provider's read); `exec:`
    commands run from `base_dir`, the folder of the file the spec came from (`file`, None for
    --node: the spec came from the command line)."""
    with tempfile.TemporaryDirectory(prefix="reconciler-import-") as tmp:
        path = os.path.join(tmp, "import.yaml")
        with open(path, "w", encoding="utf-8") as fh:
            yaml.safe_dump({"version": 1, "instances": {name: read_spec}}, fh, sort_keys=False)
        try:
            manager = Manager.from_file(path, allow_exec=allow_exec, base_dir=base_dir or os.getcwd())
        except ConfigError as exc:
            raise ConfigError(_where_given(exc.problems, file)) from None
        return manager.read([name]).instances[name]


def _where_given(problems: list[Problem], file: str | None) -> list[Problem]:
    """Problems of the temporary copy, named where the spec came from: the line of the same YAML
    path in `file`, or the command line (`import --node`), never the copy that is gone."""
    if file is None:
        return [_moved(p, "import --node", 0) for p in problems]
    from .config.core import format_path
    from .config.yamlsrc import parse

    with open(file, encoding="utf-8") as fh:
        lines = parse(fh.read()).lines
    line_of = {format_path(k): v for k, v in lines.items()}
    return [_moved(p, file, line_of.get(p.path, 0)) for p in problems]


def _moved(p: Problem, file: str, line: int) -> Problem:
    return MoreProblems(file, 0, "", "", p.count) if isinstance(p, MoreProblems) else Problem(file, line, p.path, p.message)


def run(req: Request) -> str:
    """Read the instance, build its file and write it to `req.out` (replaced whole, never half
    written); -> the file's text."""
    out = req.out
    if out and os.path.exists(out) and not req.force:
        raise ReconcilerError(f"{out} exists; pass --force to overwrite it")
    out_dir = os.path.dirname(os.path.abspath(out)) if out else os.getcwd()
    if req.nodes and (req.instance or req.file):
        raise ReconcilerError("import takes --node ... or --instance N -f FILE, not both")
    if req.nodes:
        name, spec, read_spec = _from_node(req, out_dir)
    elif req.instance and req.file:
        name, spec, read_spec = _from_file(req.file, req.instance, out_dir)
    else:
        raise ReconcilerError("import needs --node HOST:PORT --admin-secret-env VAR, or --instance N -f FILE")
    base_dir = os.path.dirname(os.path.abspath(req.file)) if req.file else None
    state = read(name, read_spec, allow_exec=req.allow_exec, base_dir=base_dir, file=req.file if req.instance else None)
    text = render(build(name, spec, state))
    if out:
        tmp = f"{out}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, out)
    return text
