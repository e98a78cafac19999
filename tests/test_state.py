"""The live state carries the command table each node is judged with (state.NodeState.acl_table):
the planner, the safety rails and verification resolve it the same way, and a table read off a
node never comes from process-wide state or a nearby version."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from reconciler import planner
from reconciler.acl.table import CommandTable
from reconciler.errors import PlanError
from reconciler.state import InstanceState, LiveState, LiveUser, NodeState


def node(**kw) -> NodeState:
    users = {"default": LiveUser("default", True, False, ("a" * 64,), "~* &* +@all")}
    return NodeState(address="10.0.0.5:6379", server="redis", version="7.0.99", users=users, **kw)


def test_a_table_read_off_the_node_travels_with_it_and_is_not_saved() -> None:
    bundled = CommandTable.bundled("redis-7.0.15")
    read = CommandTable("redis-7.0.99", "redis", "7.0.99", bundled.categories, bundled.commands)
    n = node(command_table="redis-7.0.99", table=read)
    assert n.acl_table() is read
    saved = n.to_json()
    assert "table" not in saved and saved["command_table"] == "redis-7.0.99"
    # Saved and loaded (plan fixtures, live.json), the name alone must resolve: it does not here.
    with pytest.raises(KeyError):
        NodeState.from_json(saved).acl_table()
    assert node(command_table="redis-7.0.15").acl_table().name == "redis-7.0.15"


def test_no_nearby_version_stands_in_for_a_missing_table(tmp_path) -> None:
    from reconciler import config

    f = tmp_path / "access.yaml"
    f.write_text('version: 1\ninstances:\n  c:\n    nodes: ["10.0.0.5:6379"]\n    auth_mode: none\nusers:\n  app:\n    acl: "+get"\n    tokens: []\n    enabled: false\n')
    desired = config.load(str(f), resolve_secrets=False)
    missing = node(command_table="redis-7.0.99")  # neither bundled nor read off the node
    with pytest.raises(PlanError, match="no command table 'redis-7.0.99'"):
        planner.plan(desired, LiveState(instances={"c": InstanceState("c", (missing,))}), today=date(2026, 11, 23))
    # With the table read off the node, the same node plans.
    bundled = CommandTable.bundled("redis-7.0.15")
    found = replace(missing, table=CommandTable("redis-7.0.99", "redis", "7.0.99", bundled.categories, bundled.commands))
    plan = planner.plan(desired, LiveState(instances={"c": InstanceState("c", (found,))}), today=date(2026, 11, 23))
    assert [c.user for n in plan.instances[0].nodes for c in n.changes] == ["app"]
