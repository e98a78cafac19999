"""What the installed package needs at run time: resources inside the package, declared
dependencies only, the HTTP providers' libraries loaded only by files that use them."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from reconciler import resources

ROOT = Path(__file__).resolve().parents[1]
# Distribution name -> the module it provides, where they differ.
MODULE_OF = {"pyyaml": "yaml"}

# Runs one CLI command in a fresh interpreter and prints which optional libraries it loaded.
PROBE = """
import json, sys
from reconciler.cli import main
rc = main(sys.argv[1:])
loaded = sorted(m for m in ("requests", "urllib3", "reconciler.providers.http", "hvac") if m in sys.modules)
print(json.dumps({"rc": rc, "loaded": loaded}))
"""


def _probe(*argv: str, cwd: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["RECONCILER_NO_CACHE"] = "1"
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    *output, last = proc.stdout.strip().splitlines()
    return {**json.loads(last), "output": "\n".join(output) + proc.stderr}


def test_redis_only_workflow_never_imports_requests(server_factory, tmp_path: Path) -> None:
    srv = server_factory("valkey-9.1")
    f = tmp_path / "access.yaml"
    f.write_text(
        "version: 1\npolicies: {forbid_nopass: false}  # the test server has a nopass default user\n"
        f"instances:\n  main:\n    nodes: ['{srv.address}']\n    auth_mode: none\n    persist: none\n"
        "users:\n  app:\n    acl: '~app:* +get'\n    tokens: [{id: t1, sha256: " + "a" * 64 + "}]\n"
    )
    runs = {
        "validate": ("validate", "-f", str(f)),
        "plan": ("plan", "-f", str(f), "--detailed-exitcode"),
        "apply": ("apply", "-f", str(f), "--auto-approve"),
        "drift": ("drift", "-f", str(f)),
        "import": ("import", "--instance", "main", "-f", str(f)),
    }
    expected_rc = {"validate": 0, "plan": 2, "apply": 0, "drift": 0, "import": 0}
    for name, argv in runs.items():
        result = _probe(*argv, cwd=tmp_path)
        assert result["rc"] == expected_rc[name], (name, result)
        assert result["loaded"] == [], f"`reconciler {name}` on a redis-only file loaded {result['loaded']}"


def test_http_provider_loads_requests_when_used(tmp_path: Path) -> None:
    # The probe's detection works: asking for an HTTP provider does load requests.
    code = "import sys; from reconciler import providers; providers.provider_class('redis-software'); print('requests' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "True", proc.stderr


def test_packaged_schema_is_the_top_level_schema() -> None:
    top = ROOT / "schemas" / "desired-state.schema.json"
    packaged = ROOT / "reconciler" / resources.SCHEMA
    assert packaged.is_symlink() and packaged.resolve() == top.resolve(), "reconciler/schemas/ must link to schemas/"
    assert json.loads(resources.read_text(resources.SCHEMA)) == json.loads(top.read_text())


def test_resources_are_package_data() -> None:
    # Everything resources.py reads must be listed in pyproject's package-data, or the wheel lacks it.
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["reconciler"]
    globbed = {p.relative_to(ROOT / "reconciler").as_posix() for pat in patterns for p in (ROOT / "reconciler").glob(pat)}
    assert resources.SCHEMA in globbed
    for folder, suffix in ((resources.TABLES, ".json"), (resources.TEMPLATES, ".j2")):
        names = resources.names(folder, suffix)
        assert names, folder
        assert {f"{folder}/{n}{suffix}" for n in names} <= globbed, folder


def test_version_and_schema_commands() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "reconciler", *a], capture_output=True, text=True, env=env, timeout=60)  # noqa: E731 - two calls
    version = run("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"reconciler {importlib.metadata.version('reconciler')}"
    schema = run("schema")
    assert schema.returncode == 0
    assert json.loads(schema.stdout) == json.loads((ROOT / "schemas" / "desired-state.schema.json").read_text())


def _third_party_imports() -> set[str]:
    stdlib = set(sys.stdlib_module_names)
    found: set[str] = set()
    for path in (ROOT / "reconciler").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found |= {n.split(".")[0] for n in names} - stdlib - {"reconciler"}
    return found


def test_every_runtime_import_is_declared_and_every_dependency_used() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {}
    for req in project["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.-]+", req).group(0).lower()
        assert re.search(r">=\s*\d", req), f"{req}: needs a lower bound"
        declared[MODULE_OF.get(name, name)] = req
    # Extras other than `test` are features a plain install lacks (the `embedded` Valkey that
    # `local-server` runs); reconciler/ imports them only where the feature is used.
    optional = {}
    for extra, reqs in project["optional-dependencies"].items():
        for req in reqs if extra != "test" else ():
            name = re.match(r"[A-Za-z0-9_.-]+", req).group(0).lower()
            optional[MODULE_OF.get(name, name)] = req
    imported = _third_party_imports()
    assert imported - set(declared) - set(optional) == set(), "imported by reconciler/ but not declared in pyproject.toml"
    assert (set(declared) | set(optional)) - imported == set(), "declared in pyproject.toml but never imported by reconciler/"


def _imports_of(path: Path) -> set[str]:
    """Top-level names of the modules a file imports (anywhere in it)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_dependency_comments_name_the_modules_that_import_them() -> None:
    # Each dependency line says where it is used: every file named there exists and imports it,
    # and every folder named there has a file that does (so a move or a rename updates them).
    lines = [line for line in (ROOT / "pyproject.toml").read_text().splitlines() if re.match(r'\s+"[A-Za-z0-9_.-]+>=', line)]
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert len(lines) >= len(deps)
    for line in lines[: len(deps)]:
        name = re.match(r'\s+"([A-Za-z0-9_.-]+)', line).group(1).lower()
        module = MODULE_OF.get(name, name)
        comment = line.split("#", 1)[1] if "#" in line else ""
        named = re.findall(r"[A-Za-z0-9_/]+\.py|[A-Za-z0-9_/]+/(?=[),\s])", comment)
        assert named, f"{name}: the comment names no module"
        for ref in named:
            path = ROOT / "reconciler" / ref
            files = sorted(path.rglob("*.py")) if ref.endswith("/") else [path]
            assert path.exists(), f"{name}: reconciler/{ref} does not exist"
            assert any(module in _imports_of(f) for f in files), f"{name}: reconciler/{ref} does not import {module}"
