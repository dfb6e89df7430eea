"""Imports flow one way: cli -> bench -> trainer -> report -> config/data/model -> errors."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[3] / "workload" / "transfer_learning"

# What each module may import from the package (function-local imports count too).
ALLOWED = {
    "errors": set(),
    "config": {"errors"},
    "memory": {"errors"},
    "precision": set(),
    "data": {"errors", "memory", "precision"},
    "model": {"errors"},
    "distributed": {"errors"},
    "fetch": {"errors"},
    "progress": {"errors"},
    "report": {"data", "model", "errors"},
    "trainer": {
        "config",
        "data",
        "distributed",
        "errors",
        "memory",
        "model",
        "precision",
        "progress",
        "report",
    },
    "bench": {"config", "data", "distributed", "errors", "model", "precision", "trainer"},
    "nodes": {"errors"},
    "cli": {"bench", "config", "data", "errors", "fetch", "nodes", "trainer"},
    "__main__": {"cli"},
    "__init__": set(),
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("transfer_learning"):
            module = node.module or ""
            if module == "transfer_learning":
                found |= {alias.name for alias in node.names}
            else:
                found.add(module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("transfer_learning."):
                    found.add(alias.name.split(".")[1])
    return found


def test_every_module_is_placed() -> None:
    assert {p.stem for p in PACKAGE.glob("*.py")} <= set(ALLOWED)


def test_imports_flow_one_way() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        extra = _imports(path) - ALLOWED[path.stem] - {"__version__"}
        assert not extra, f"{path.name} imports {sorted(extra)}"
