"""A node's settings and persistence, after its user writes: CONFIG SET for the settings the
file manages (tls_client_auth), with CONFIG REWRITE when the server has a config file; then
the ACLs saved the way the plan says (`ACL SAVE` with an aclfile, `CONFIG REWRITE` with a
config file, `SENTINEL FLUSHCONFIG` on a sentinel, or nothing and a warning: changes live in
memory only). Where the plan could not tell (`auto`), ACL SAVE is tried first.
"""

from __future__ import annotations

from typing import Any

from ...errors import LiveError
from .node_run import FAILED, IN_DOUBT, OK, NodeRun, Stop


def set_config(run: NodeRun, client: Any) -> None:
    """CONFIG SET for managed settings (tls_client_auth); CONFIG REWRITE when the server has a config file."""
    config = run.node.config
    if not config:
        return
    run.before_write("CONFIG SET")
    for cc in config:
        label = f"{cc.parameter} {cc.after}"
        run.attempt([("config", label, None)])
        try:
            with run.deadline(client, f"CONFIG SET {cc.parameter}"):
                client.execute_command("CONFIG", "SET", cc.parameter, cc.after)
        except LiveError as exc:  # the deadline: sent, no answer
            run.record("config", label, IN_DOUBT, str(exc))
            run.fail(str(exc))
            raise Stop from None
        except Exception as exc:
            run.record("config", label, FAILED, str(exc))
            run.fail(f"CONFIG SET {label} refused: {exc}")
            raise Stop from None
        run.record("config", label, OK, f"was {cc.before}")
    if any(cc.rewrite for cc in config) and run.node.persist != "config-rewrite":
        run.attempt([("config", "rewrite", None)])
        try:
            with run.deadline(client, "CONFIG REWRITE"):
                client.execute_command("CONFIG", "REWRITE")
        except Exception as exc:
            run.record("config", "rewrite", FAILED, str(exc))
            run.fail(f"CONFIG REWRITE after CONFIG SET failed: {exc}")
            raise Stop from None
        run.record("config", "rewrite", OK)


def persist(run: NodeRun, client: Any) -> None:
    run.check_stop()
    run.check_lock("persist")
    mode = run.node.persist
    if mode not in ("warn", "none"):
        run.attempt([("persist", "", None)])
    try:
        with run.deadline(client, "persist"):
            if mode == "auto":
                # The aclfile setting could not be read (no CONFIG GET). ACL SAVE is tried first: only
                # the server's own "no ACL file" answer makes CONFIG REWRITE (or nothing) safe.
                mode = _save_or_fallback(run, client)
            elif mode == "acl-save":
                client.execute_command("ACL", "SAVE")
            elif mode == "config-rewrite":
                client.execute_command("CONFIG", "REWRITE")
            elif mode == "sentinel-flushconfig":  # a sentinel has no CONFIG REWRITE; this rewrites its file, users too
                client.execute_command("SENTINEL", "FLUSHCONFIG")
            # mode "warn": nothing to run; the pipeline says so once per instance (pipeline.unpersisted)
    except Exception as exc:
        run.record("persist", "", FAILED, f"{mode}: {exc}")
        run.result.persisted = "failed"
        run.fail(f"persist ({mode}) failed: {exc}")
        raise Stop from None
    run.result.persisted = mode
    run.record("persist", "", OK, mode)


def _save_or_fallback(run: NodeRun, client: Any) -> str:
    try:
        client.execute_command("ACL", "SAVE")
        return "acl-save"
    except Exception as exc:
        if "acl file" not in str(exc).lower():
            raise
    try:
        client.execute_command("CONFIG", "REWRITE")
        return "config-rewrite"
    except Exception as exc:
        if "config file" not in str(exc).lower():
            raise
    run.warn(f"{run.instance.name} {run.node.address}: no aclfile and no config file; changes live in memory only")
    return "warn"
