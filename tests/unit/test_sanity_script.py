"""scripts/sanity.py (make lint's ansible-test sanity) finds the environments ansible-test
looks for, and the test extras bring every package those environments need."""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("wyvern_sanity", ROOT / "scripts" / "sanity.py")
sanity = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(sanity)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_validate_modules_runs_by_default_in_ansible_tests_own_environment() -> None:
    assert "validate-modules" in sanity.DEFAULT_TESTS
    path, wanted = sanity.venv_path("validate-modules")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert path.parent == Path.home() / ".ansible/test/venv/sanity.validate-modules" / version
    assert any(_normal(w).startswith("voluptuous") for w in wanted)


@pytest.mark.parametrize("test", sanity.DEFAULT_TESTS)
def test_the_test_extras_bring_what_each_sanity_test_needs(test: str) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        _normal(re.split(r"[<>=!\[ ;]", line, maxsplit=1)[0])
        for line in project["dependencies"] + project["optional-dependencies"]["test"]
    }
    # Brought by ansible-core (the "ansible" dependency) itself.
    declared |= {"jinja2", "markupsafe", "pyyaml", "packaging", "resolvelib", "cryptography"}
    _, wanted = sanity.venv_path(test)
    needed = {_normal(w.split("==")[0]) for w in wanted}
    assert needed <= declared, f"add {sorted(needed - declared)} to the test extras"
