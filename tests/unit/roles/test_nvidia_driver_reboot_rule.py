"""The driver role's reboot rule: reboot only when the driver install changed, never over
a local connection (then tell the user), and never when nvidia_driver_reboot is false.

The conditions are read from the role's own task files and evaluated by Ansible's own
templating, for every combination of inputs, so an edit that drops or weakens one of
them fails here. (tests/integration/test_nvidia_driver_reboot.py runs reboot.yml for real.)
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

TASKS = Path(__file__).resolve().parents[3] / "roles" / "nvidia_driver" / "tasks"


def _task(file: str, name: str) -> dict[str, Any]:
    tasks = yaml.safe_load((TASKS / file).read_text())
    (task,) = [t for t in tasks if t.get("name") == name]
    return task


def _when(task: dict[str, Any], variables: dict[str, Any]) -> bool:
    conditions = task.get("when", [])
    if not isinstance(conditions, list):
        conditions = [conditions]
    templar = Templar(loader=DataLoader(), variables=variables)
    return all(templar.evaluate_conditional(trust_as_template(str(c))) for c in conditions)


def _reboot_pending(variables: dict[str, Any]) -> bool:
    setter = _task("reboot.yml", "Decide whether this play may reboot the host")
    expression = setter["ansible.builtin.set_fact"]["_nvidia_driver_reboot_pending"]
    templar = Templar(loader=DataLoader(), variables=variables)
    value = templar.template(trust_as_template(expression))
    return value if isinstance(value, bool) else str(value).strip() == "True"


@pytest.mark.parametrize(
    ("needed", "install_changed", "check_mode"),
    list(itertools.product([True, False], repeat=3)),
)
def test_reboot_is_considered_only_after_an_install_that_changed(
    needed: bool, install_changed: bool, check_mode: bool
) -> None:
    include = _task("driver.yml", "Reboot into the new driver, or tell the user to")
    assert include["ansible.builtin.include_tasks"] == "reboot.yml"
    variables = {
        "_nvidia_driver_needed": needed,
        "_nvidia_driver_install": {"changed": install_changed},
        "ansible_check_mode": check_mode,
    }
    assert _when(include, variables) is (needed and install_changed and not check_mode)


def test_a_skipped_install_never_reboots() -> None:
    include = _task("driver.yml", "Reboot into the new driver, or tell the user to")
    variables = {
        "_nvidia_driver_needed": True,
        "_nvidia_driver_install": {"changed": False, "skipped": True},
        "ansible_check_mode": False,
    }
    assert _when(include, variables) is False


@pytest.mark.parametrize("connection", ["local", "ssh", None])
@pytest.mark.parametrize("allowed", [True, False])
def test_reboot_only_over_a_remote_connection_when_allowed(
    connection: str | None, allowed: bool
) -> None:
    variables: dict[str, Any] = {"nvidia_driver_reboot": allowed}
    if connection is not None:
        variables["ansible_connection"] = connection
    pending = _reboot_pending(variables)
    variables["_nvidia_driver_reboot_pending"] = pending
    reboots = _when(_task("reboot.yml", "Reboot the host to load the new driver"), variables)
    tells = _task("reboot.yml", "Tell the user to reboot")
    # The unset connection is Ansible's default, ssh.
    assert reboots is (connection != "local" and allowed)
    assert _when(tells, variables) is not reboots  # exactly one of the two happens


def test_the_user_is_told_why_no_reboot_happened() -> None:
    tells = _task("reboot.yml", "Tell the user to reboot")
    msg = tells["ansible.builtin.debug"]["msg"]
    for connection, reason in (
        ("local", "(a local connection is never rebooted by Ansible)"),
        ("ssh", "(nvidia_driver_reboot is false)"),
    ):
        templar = Templar(
            loader=DataLoader(),
            variables={"inventory_hostname": "gpu-box", "ansible_connection": connection},
        )
        text = " ".join(str(templar.template(trust_as_template(msg))).split())
        assert "Reboot this machine, then run the play again" in text
        assert text.endswith(reason + "."), text
