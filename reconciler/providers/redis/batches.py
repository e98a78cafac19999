"""The user writes of one node: `ACL SETUSER` for created and updated users, then `ACL DELUSER`
for deleted ones, pipelined without MULTI in batches (one round trip per batch), every reply
checked. Each SETUSER is atomic (`reset` first), so a user is either fully old or fully new
whatever stops the node; before each batch the node's apply lock must still be held.
"""

from __future__ import annotations

from typing import Any

from ...names import shown
from ...plan import UserChange
from .node_run import FAILED, IN_DOUBT, OK, NodeRun, Stop


def send(run: NodeRun, client: Any, step: str) -> None:
    """Every change pending for `step` ("setuser" or "deluser") on this node, a batch at a time."""
    items = run.pending.get(step, [])
    for start in range(0, len(items), run.batch_size):
        batch = items[start : start + run.batch_size]
        run.pending[step] = items[start:]
        run.before_write(f"{step} batch {run.batch_no + 1}")
        run.attempt([(c.action, c.user, c) for c in batch])
        pipe = client.pipeline(transaction=False)
        for c in batch:
            pipe.execute_command(*_command(step, c))
        try:
            with run.deadline(client, f"{step} batch {run.batch_no + 1}"):
                replies = pipe.execute(raise_on_error=False)
        except Exception as exc:  # the node died, stalled past the deadline or broke mid-batch
            for c in batch:
                run.record(c.action, c.user, IN_DOUBT, change=c)
            run.pending[step] = items[start + len(batch) :]
            run.fail(f"connection lost during {step} batch {run.batch_no + 1}: {exc}")
            raise Stop from None
        refused: list[str] = []
        for c, reply in zip(batch, replies, strict=True):
            refused_text = _check_reply(run, step, c, reply)
            if refused_text:
                refused.append(f"{shown(c.user)}: {refused_text}")
        run.pending[step] = items[start + len(batch) :]
        run.batch_no += 1
        if refused:
            run.fail(f"server refused {len(refused)} command(s): " + "; ".join(refused[:5]))
            raise Stop from None
        if run.between_batches is not None:
            run.between_batches(run.instance.name, run.node.address, step, run.batch_no)


def _command(step: str, c: UserChange) -> tuple[str, ...]:
    if step == "setuser":
        return ("ACL", "SETUSER", c.user, *c.setuser_args())
    return ("ACL", "DELUSER", c.user)


def _check_reply(run: NodeRun, step: str, c: UserChange, reply: Any) -> str:
    """Record the outcome of one command; return the refusal text ("" when it worked)."""
    if isinstance(reply, Exception):
        run.record(c.action, c.user, FAILED, str(reply), c)
        return str(reply)
    if step == "setuser" and not _is_ok(reply):
        run.record(c.action, c.user, FAILED, f"unexpected reply {_text(reply)!r}", c)
        return f"unexpected reply {_text(reply)!r}"
    detail = "already absent" if step == "deluser" and int(reply) == 0 else ""
    run.record(c.action, c.user, OK, detail, c)
    return ""


def _is_ok(reply: Any) -> bool:
    return reply is True or reply in (b"OK", "OK")


def _text(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)
