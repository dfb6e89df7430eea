"""The notebook role's preflight judges a bind address with the module's own rule."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_container import spec
from ansible_collections.wyvern.workbench.plugins.test import notebook as notebook_tests

ROOT = Path(__file__).resolve().parents[4]
LOOPBACK = notebook_tests.TestModule().tests()["loopback_address"]


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.0.0.2",
        "::1",
        "localhost",
        " 127.0.0.1 ",
        "0.0.0.0",
        "::",
        "10.0.0.5",
        "127.1",
        "",
        "example.org",
    ],
)
def test_the_jinja_test_is_the_module_rule(address: str) -> None:
    assert LOOPBACK(address) == spec.is_loopback(address.strip())
    refused = True
    try:
        spec.check_bind_address(address.strip(), allow_public_bind=False)
        refused = False
    except spec.NotebookError:
        pass
    assert LOOPBACK(address) is not refused


def test_preflight_uses_it_instead_of_a_pattern_of_its_own() -> None:
    tasks = yaml.safe_load((ROOT / "roles" / "notebook" / "tasks" / "preflight.yml").read_text())
    (bind,) = [t for t in tasks if "notebook_bind_address" in str(t["ansible.builtin.assert"])]
    that = str(bind["ansible.builtin.assert"]["that"])
    assert "is wyvern.workbench.loopback_address" in that and "match(" not in that
