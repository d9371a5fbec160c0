"""Imports only run downward: cli -> runs -> engine | training | wsi -> backbones -> config -> the base modules.

Every import in every module counts, the ones inside functions too (that is where the heavy ones live).
``engine``, ``training`` and ``wsi`` stand side by side and never import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "pathotune_cli"
RANK = {"cli": 5, "runs": 4, "engine": 3, "training": 3, "wsi": 3, "backbones": 2, "config": 1}
"""Layers by height; the top-level modules (errors, files, events, formats, hardware, imaging, cluster, demo_data)
are 0."""


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else "base"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pathotune_cli"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pathotune_cli"))
    return found


def test_no_import_runs_upward_and_side_layers_stay_apart() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py":  # the entry point stands above everything
            continue
        module = "pathotune_cli." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        here = _layer(module)
        for imported in _imports(path):
            there = _layer(imported)
            if here == there or there == "base":
                continue
            if here == "base" or RANK[there] > RANK[here] or (RANK[there] == RANK[here]):
                wrong.append(f"{module} imports {imported}")
    assert wrong == []


def test_the_base_modules_import_nothing_of_pathotune_but_each_other() -> None:
    for name in ("errors", "files", "events", "formats", "hardware", "imaging", "cluster", "demo_data"):
        layers = {_layer(m) for m in _imports(PACKAGE / f"{name}.py")}
        assert layers <= {"base"}, (name, layers)


def _module_name(path: Path) -> str:
    return ("pathotune_cli." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")


def _import_graph() -> dict[str, set[str]]:
    """Module -> the pathotune modules it imports (``from pkg import submodule`` counts the submodule)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pathotune_cli"):
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_no_module_imports_in_a_circle() -> None:
    graph = _import_graph()
    circles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            here, trail = stack.pop()
            for there in graph[here]:
                if there == start:
                    circles.append(" -> ".join([*trail, start]))
                elif there not in seen:
                    seen.add(there)
                    stack.append((there, [*trail, there]))
    assert circles == []


def test_runs_is_rooms_and_no_function_is_long() -> None:
    assert len([p for p in (PACKAGE / "runs").glob("*.py") if p.name != "__init__.py"]) <= 20
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 70:
                long.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert long == []
