"""Fleets: `--instance` globs and `--shard K/N` pick instances; a sharded drift over real
servers covers every instance exactly once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cli import Cli, Result

from reconciler.errors import ReconcilerError
from reconciler.manager import Shard, select

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["cache-eu-1", "cache-eu-2", "cache-us-1", "sessions", "cache-eu-10"]


def test_instance_globs_keep_file_order_and_refuse_what_matches_nothing() -> None:
    assert select(NAMES, None) == NAMES
    assert select(NAMES, ["cache-eu-*"]) == ["cache-eu-1", "cache-eu-2", "cache-eu-10"]
    assert select(NAMES, ["sessions", "cache-us-?"]) == ["cache-us-1", "sessions"]
    assert select(NAMES, ["cache-eu-[12]"]) == ["cache-eu-1", "cache-eu-2"]
    with pytest.raises(ReconcilerError, match="unknown instance cache-ap-"):
        select(NAMES, ["cache-eu-1", "cache-ap-*"])


def test_shards_partition_the_instances_evenly_whatever_the_file_order() -> None:
    names = [f"i{n:03d}" for n in range(50)]
    for n in (1, 2, 3, 7, 50, 60):
        slices = [Shard(k, n).pick(names) for k in range(1, n + 1)]
        assert sorted(x for s in slices for x in s) == sorted(names)  # each exactly once
        sizes = [len(s) for s in slices]
        assert max(sizes) - min(sizes) <= 1
        shuffled = names[::-1]
        assert [sorted(Shard(k, n).pick(shuffled)) for k in range(1, n + 1)] == [sorted(s) for s in slices]
    assert Shard.parse("2/4") == Shard(2, 4)
    for bad in ("0/4", "5/4", "4", "a/b", "1/0", "-1/2"):
        with pytest.raises(ReconcilerError, match="--shard"):
            Shard.parse(bad)


def _run(*args: str) -> Result:
    return Cli(ROOT, env={"RECONCILER_NO_CACHE": "1", "RECONCILER_TODAY": "2026-11-23"})(*args)


def test_sharded_drift_over_real_servers_covers_each_instance_once(server_factory, tmp_path: Path) -> None:
    servers = {name: server_factory("valkey-9.1") for name in ("fleet-a", "fleet-b", "fleet-c", "other")}
    lines = ["version: 1", "instances:"]
    for name, srv in servers.items():
        lines += [f"  {name}:", f'    nodes: ["{srv.address}"]', "    persist: none", "    auth_mode: none"]
    lines += ["users:", "  app:", '    acl: "~app:* +@read"', "    tokens: []", "    enabled: false"]
    f = tmp_path / "fleet.yaml"
    f.write_text("\n".join(lines) + "\n")

    seen: list[str] = []
    for k in (1, 2):
        r = _run("drift", "-f", str(f), "--instance", "fleet-*", "--shard", f"{k}/2", "--format", "json")
        assert r.code == 2, r.err  # `app` is missing everywhere: drift
        seen += [i["name"] for i in json.loads(r.out)["instances"]]
    assert sorted(seen) == ["fleet-a", "fleet-b", "fleet-c"]

    r = _run("plan", "-f", str(f), "--instance", "fleet-*", "--instance", "other", "--format", "json")
    assert r.code == 0, r.err
    assert [i["name"] for i in json.loads(r.out)["instances"]] == ["fleet-a", "fleet-b", "fleet-c", "other"]

    r = _run("plan", "-f", str(f), "--shard", "3/2")
    assert r.code == 1 and r.err.startswith("reconciler: --shard '3/2'"), r.err
    r = _run("plan", "-f", str(f), "--instance", "nope-*")
    assert r.code == 1 and "unknown instance nope-*" in r.err
