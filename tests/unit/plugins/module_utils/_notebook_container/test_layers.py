"""The package's imports flow one way: manager -> engine -> health -> host -> spec -> common.

Each module may import only the layers after it, and only spec, host, health and common
stay free of the Docker SDK (check mode and the unit tests of the plan need no daemon).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[5] / "plugins" / "module_utils" / "_notebook_container"
LAYERS = ["manager", "engine", "health", "host", "spec", "common"]
PREFIX = "ansible_collections.wyvern.workbench.plugins.module_utils._notebook_container"


def _imports(name: str) -> tuple[set[str], set[str]]:
    """(package layers, top-level other modules) that the layer imports."""
    tree = ast.parse((PACKAGE / f"{name}.py").read_text())
    layers, others = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == PREFIX:
                layers |= {alias.name for alias in node.names}
            elif node.module.startswith(PREFIX + "."):
                layers.add(node.module.rsplit(".", 1)[1])
            else:
                others.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            others |= {alias.name.split(".")[0] for alias in node.names}
    return layers, others


def test_every_module_of_the_package_is_a_layer() -> None:
    assert {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"} == set(LAYERS)


@pytest.mark.parametrize("name", LAYERS)
def test_a_layer_imports_only_the_layers_below_it(name: str) -> None:
    layers, others = _imports(name)
    below = set(LAYERS[LAYERS.index(name) + 1 :])
    assert layers <= below, f"{name} imports {sorted(layers - below)}"
    if name in ("health", "host", "spec", "common"):
        assert "docker" not in others
