"""Closing the open connections of users a plan revokes (`off` and password removal leave them
alive): one `CLIENT LIST` per batch, then `CLIENT KILL ID` for each of the user's connections
except this process's own -- the apply lock is named like them, and `CLIENT KILL USER` would
close it too when the admin's own token is revoked (our own connection is skipped by the
server). After DELUSER a user has no connections left: DELUSER dropped them.
"""

from __future__ import annotations

from typing import Any

from ... import lock
from ...names import shown
from .node_run import FAILED, IN_DOUBT, OK, NodeRun, Stop


def kill(run: NodeRun, client: Any) -> None:
    """Every user pending in run.pending["kill"], a batch at a time."""
    items = run.pending.get("kill", [])
    for start in range(0, len(items), run.batch_size):
        batch = items[start : start + run.batch_size]
        run.pending["kill"] = items[start:]
        phase = f"kill batch {run.batch_no + 1}"
        run.before_write(phase)
        try:
            with run.deadline(client, f"{phase}: CLIENT LIST"):
                listed = lock.parse_clients(client.execute_command("CLIENT", "LIST"))
        except Exception as exc:  # nothing was killed yet: refused, or the node is gone
            for c in batch:
                run.record("kill-sessions", c.user, FAILED, f"CLIENT LIST: {exc}", c)
            run.pending["kill"] = items[start + len(batch) :]
            run.fail(f"{phase}: CLIENT LIST failed: {exc}")
            raise Stop from None
        ours = lock.own_names()
        ids = {c.user: [e["id"] for e in listed if e.get("user") == c.user and e.get("name", "") not in ours and e.get("id")] for c in batch}
        run.attempt([("kill-sessions", c.user, c) for c in batch])
        pipe = client.pipeline(transaction=False)
        for c in batch:
            for client_id in ids[c.user]:
                pipe.execute_command("CLIENT", "KILL", "ID", client_id)  # SKIPME yes: never this connection
        try:
            with run.deadline(client, phase):
                replies = pipe.execute(raise_on_error=False) if any(ids.values()) else []
        except Exception as exc:  # the node died, stalled past the deadline or broke mid-batch
            for c in batch:
                run.record("kill-sessions", c.user, IN_DOUBT, change=c)
            run.pending["kill"] = items[start + len(batch) :]
            run.fail(f"connection lost during {phase}: {exc}")
            raise Stop from None
        refused: list[str] = []
        at = 0
        for c in batch:
            mine = replies[at : at + len(ids[c.user])]
            at += len(ids[c.user])
            errors = [r for r in mine if isinstance(r, Exception)]
            n = sum(int(r) for r in mine if not isinstance(r, Exception))
            if not errors:
                run.result.killed[c.user] = n  # pending.finish: this revoke is complete
            if errors:
                run.record("kill-sessions", c.user, FAILED, str(errors[0]), c)
                refused.append(f"{shown(c.user)}: {errors[0]}")
            elif c.action == "delete" and not ids[c.user]:
                # Measured on Redis 6.2-Valkey 9.1: DELUSER closes the user's connections.
                run.record("kill-sessions", c.user, OK, "user deleted; DELUSER closed its connections", c)
            else:
                run.record("kill-sessions", c.user, OK, f"{n} connection{'s' if n != 1 else ''} killed", c)
        run.pending["kill"] = items[start + len(batch) :]
        run.batch_no += 1
        if refused:
            run.fail(f"server refused {len(refused)} command(s): " + "; ".join(refused[:5]))
            raise Stop from None
        if run.between_batches is not None:
            run.between_batches(run.instance.name, run.node.address, "kill", run.batch_no)
