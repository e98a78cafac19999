"""`reconciler explain USER -f FILE [--command CMD --key K]`: what a declared user may do on
each node version and which rule grants or denies it, from the ACL engine; no writes.

Live (the default): every node of the user's instances is read, nodes of one version are
grouped, and on Redis 7.0+ / Valkey the server's own ACL DRYRUN answer is shown next to the
engine's when the user exists there. --offline: no connection, every bundled server version.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import acl
from ..acl.explain import Verdict, argv_for, explain
from ..errors import ReconcilerError
from ..manager import Manager
from ..model import User
from ..state import NodeState


def _table(node: NodeState) -> Any:
    return node.acl_table()


def _lines_for(user: User, table: Any, argv: list[str] | None) -> tuple[list[str], Verdict | None]:
    lines: list[str] = []
    try:
        perms = acl.effective(user.rules, table)
    except (acl.UnsupportedRule, ValueError) as exc:
        return [f"    cannot be expressed here: {exc}"], None
    lines.extend(f"    {line}" for line in acl.describe(perms))
    verdict = None
    if argv:
        verdict = explain(user.rules, table, argv)
        lines.append(f"    {' '.join(argv)}: {verdict.reason}")
    return lines, verdict


def run(args: argparse.Namespace) -> int:
    manager = Manager.from_file(args.file, allow_exec=getattr(args, "allow_exec", False))
    desired = manager.desired
    user = desired.users.get(args.user)
    if user is None:
        raise ReconcilerError(f"user {args.user} is not declared in {args.file} (explain judges declared users)")
    argv = argv_for(args.probe_command, args.key, args.channel) + (args.arg or []) if args.probe_command else None
    if not argv and (args.key or args.channel or args.arg):
        raise ReconcilerError("--key/--channel/--arg need --command")
    state = "enabled" if user.enabled else "disabled (off): cannot log in"
    roles = f"roles {', '.join(user.roles)}; " if user.roles else ""
    out = [f"user {user.name} ({state}); {roles}rules: {user.rules or '(none: nothing allowed)'}"]
    if args.offline:
        for name in acl.CommandTable.available():
            table = acl.CommandTable.bundled(name)
            out.append(f"  {name} (bundled command table):")
            out.extend(_lines_for(user, table, argv)[0])
        sys.stdout.write("\n".join(out) + "\n")
        return 0
    names = [n for n in manager.instance_names(args.instance) if n in user.instances]
    if not names:
        raise ReconcilerError(f"user {user.name} is on none of the instances asked for")
    live_state = manager.read(names)
    for name in names:
        groups: dict[str, list[NodeState]] = {}
        for node in live_state.instances[name].nodes:
            groups.setdefault(f"{node.label}|{node.command_table}", []).append(node)
        out.append(f"Instance {name}:")
        for nodes in groups.values():
            where = ", ".join(n.address for n in nodes)
            out.append(f"  {nodes[0].label} ({where}):")
            lines, verdict = _lines_for(user, _table(nodes[0]), argv)
            out.extend(lines)
            live_user = nodes[0].users.get(user.name)
            if live_user is None:
                out.append("    on the server: not yet (apply creates it)")
            else:
                table = _table(nodes[0])
                try:
                    same = acl.effective(live_user.rules, table) == acl.effective(user.rules, table)
                except (acl.UnsupportedRule, ValueError):
                    same = False
                state_ = "on" if live_user.enabled else "off"
                out.append(
                    f"    on the server ({state_}): "
                    + ("the same permissions" if same else "different permissions; `reconciler plan` shows the change")
                )
            if argv and verdict is not None:
                answer = manager.dryrun(name, nodes[0], user.name, argv)
                if answer is not None:
                    agree = answer.startswith("not judged") or answer.startswith("allowed") == verdict.allowed
                    out.append(f"    ACL DRYRUN on {nodes[0].address}: {answer}" + ("" if agree else "  (differs: the live user's rules are not the file's; see `reconciler plan`)"))
    sys.stdout.write("\n".join(out) + "\n")
    return 0
