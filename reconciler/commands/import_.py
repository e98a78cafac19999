"""`reconciler import`: desired-state YAML for what is live on one instance (tokens as sha256 entries)."""

from __future__ import annotations

import argparse
import sys

import yaml

from ..manager import Manager, today
from ..state import LiveUser


def user_entry(instance: str, u: LiveUser) -> dict:
    entry: dict = {"instances": [instance]}
    if not u.enabled:
        entry["enabled"] = False
    entry["acl"] = u.rules
    if u.hashes:
        entry["tokens"] = [{"id": f"imported-{i}", "sha256": h} for i, h in enumerate(u.hashes, 1)]
    return entry


def run(args: argparse.Namespace) -> int:
    manager = Manager.from_file(args.file)
    (name,) = manager.instance_names([args.instance])
    state = manager.read([name]).instances[name]
    node = next((n for n in state.nodes if n.role == "primary"), state.nodes[0])
    users = {u.name: user_entry(name, u) for u in sorted(node.users.values(), key=lambda u: u.name)}
    nopass = sorted(u.name for u in node.users.values() if u.nopass)
    header = [
        f"# imported from {name} {node.address} ({node.label}) on {today().isoformat()}",
        "# rules are the server's own spelling; tokens are sha256 entries (the server never holds plaintext)",
    ]
    if nopass:
        header.append(f"# nopass on the server (no token needed to log in): {', '.join(nopass)}")
    sys.stdout.write("\n".join(header) + "\n" + yaml.safe_dump({"users": users}, sort_keys=False, width=1000))
    return 0
