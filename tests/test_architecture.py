"""The shape docs/architecture.md promises: imports point one way (no module imports one that
imports it back, lazy imports included), no module uses another's private (`_name`) names, and
the Manager and the commands reach providers only through the registry (providers/__init__.py)
and the Provider interface (providers/base.py)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "reconciler"


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


MODULES = _modules()


def _imported(name: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom reads from."""
    if node.level == 0:
        return node.module or ""
    parts = name.split(".")
    if not is_package:
        parts = parts[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def _walk(tree: ast.AST, *, type_only: bool) -> list[ast.AST]:
    """Every node of `tree`; the bodies of `if TYPE_CHECKING:` only with type_only=True."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if not type_only and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo += node.orelse
            continue
        todo += list(ast.iter_child_nodes(node))
    return out


def _imports(name: str, *, type_only: bool = True) -> list[tuple[str, ast.AST]]:
    """Every reconciler module `name` imports anywhere in its file (top level, in functions and,
    with type_only, under TYPE_CHECKING), with the node that does it: `from pkg import mod` counts
    as importing mod."""
    path, is_package = MODULES[name]
    out = []
    for node in _walk(ast.parse(path.read_text()), type_only=type_only):
        if isinstance(node, ast.Import):
            out += [(a.name, node) for a in node.names if a.name.split(".")[0] == "reconciler"]
        elif isinstance(node, ast.ImportFrom):
            base = _imported(name, is_package, node)
            if base.split(".")[0] != "reconciler":
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub if sub in MODULES else base, node))
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    # Every import that runs counts, a function's lazy one too; a type hint's (under TYPE_CHECKING)
    # names a class and never runs, so a module may name the type of what calls it.
    graph = {name: {m for m, _ in _imports(name, type_only=False) if m in MODULES and m != name} for name in MODULES}
    assert sum(len(v) for v in graph.values()) > 200  # the walk found the imports
    assert _cycles(graph) == []


def test_cycle_finder_finds_one() -> None:
    # The check above can fail: a two-module loop and a three-module loop are both reported.
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert _cycles(graph) == [["a", "b"], ["c", "d", "e"]]


def test_every_module_imports_first_in_a_fresh_interpreter() -> None:
    # Import order can hide a cycle: each module is imported with no reconciler module loaded yet
    # (`__main__` runs the CLI when imported, so it is left out).
    names = sorted(n for n in MODULES if not n.endswith(".__main__"))
    code = (
        "import importlib, json, sys\n"
        "failed = {}\n"
        "for name in json.loads(sys.argv[1]):\n"
        "    for loaded in [m for m in sys.modules if m == 'reconciler' or m.startswith('reconciler.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed[name] = f'{type(exc).__name__}: {exc}'\n"
        "print(json.dumps(failed))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(names)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {}


def test_no_private_names_across_modules() -> None:
    problems = []
    for name, (path, _) in MODULES.items():
        tree = ast.parse(path.read_text())
        bound: set[str] = set()  # local names bound to a reconciler module
        for imported, node in _imports(name):
            if isinstance(node, ast.ImportFrom):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports {a.name} from {imported}")
                    if f"{_imported(name, MODULES[name][1], node)}.{a.name}" in MODULES:
                        bound.add(a.asname or a.name)
            elif isinstance(node, ast.Import):
                bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in bound
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: uses {node.value.id}.{node.attr}")
    assert problems == []


def test_manager_and_commands_reach_providers_through_the_registry() -> None:
    allowed = {"reconciler.providers", "reconciler.providers.base"}
    callers = [n for n in MODULES if n in ("reconciler.manager", "reconciler.cli") or n.startswith("reconciler.commands")]
    assert "reconciler.commands.explain" in callers
    reached = {
        (caller, imported)
        for caller in callers
        for imported, _ in _imports(caller)
        if imported.startswith("reconciler.providers") and imported not in allowed
    }
    assert reached == set()
