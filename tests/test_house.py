"""The house's shape: no import circle between the kit's modules, counting every import (at the top, inside a
function, or for type checking only), and floors by package, each importing only from itself and the floors below,
so a newcomer can read the kit from the bottom up."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.unit

PACKAGE = ROOT / "runbook_lib"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Each module of the kit and the kit's modules it imports, wherever the import stands."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    found: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[: len(package) - node.level + 1]
                start = ".".join([*base, *([node.module] if node.module else [])])
                targets = [f"{start}.{a.name}".strip(".") for a in node.names]
                found[name] |= {t if t in modules else start for t in targets} - {name, ""}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("runbook_lib"):
                start = node.module.removeprefix("runbook_lib").strip(".")
                targets = [f"{start}.{a.name}".strip(".") for a in node.names]
                found[name] |= {t if t in modules else start for t in targets} - {name, ""}
    return {name: {t for t in found[name] if t in modules} for name in modules}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_of_the_kit_imports_one_that_imports_it_back():
    graph = imports()
    assert len(graph) > 50 and "records.store" in graph["records.record_views"]  # the reader sees the kit's imports
    assert circles(graph) == []


def test_a_circle_would_be_found():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


#: the floors, from the ground up (the README's map of the house says what each holds); the package's own
#: ``errors`` and ``paths`` are the ground every floor stands on, ``cli`` the door above them all
FLOORS = ["config", "engine", "wire", "records", "sandbox", "context", "tenant", "steps", "running"]
GROUND = {"", "errors", "paths"}


def floor(module: str) -> int:
    if module in GROUND:
        return -1
    if module == "cli":
        return len(FLOORS)
    return FLOORS.index(module.split(".")[0])


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Each import that runs up a floor, as "module -> target"."""
    return sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets if floor(t) > floor(m))


def test_every_module_lives_on_a_floor_and_imports_only_its_own_floor_and_those_below():
    graph = imports()
    for module in graph:
        floor(module)  # a module on no floor: ValueError names it
    assert upward(graph) == []


def test_an_import_up_a_floor_would_be_found():
    graph = {"engine.executor": {"wire.graph", "errors"}, "wire.graph": {"engine.journal"}, "cli": {"running.batch"}}
    assert upward(graph) == ["engine.executor -> wire.graph"]
