"""The driver role's reboot step, run by Ansible: over a local connection it tells the user
to reboot and never calls the reboot module (which would reboot the control node); over
SSH it reboots, unless nvidia_driver_reboot is false. Check mode stands in for the reboot
itself (the reboot action answers "rebooted" in check mode without touching the host).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

PLAY = [
    {
        "name": "Run the driver role's reboot step",
        "hosts": "gpu_box",
        "gather_facts": False,
        "tasks": [
            {
                "name": "Reboot into the new driver, or tell the user to",
                "ansible.builtin.include_role": {
                    "name": "wyvern.workbench.nvidia_driver",
                    "tasks_from": "reboot.yml",
                },
            }
        ],
    }
]


@pytest.mark.parametrize(
    ("connection", "allowed", "reboots"),
    [("local", True, False), ("ssh", True, True), ("ssh", False, False)],
)
def test_reboot_rule_as_ansible_runs_it(
    connection: str,
    allowed: bool,
    reboots: bool,
    repo_root: Path,
    ansible_env: dict[str, str],
    tmp_path: Path,
) -> None:
    playbook = tmp_path / "reboot.yml"
    playbook.write_text(yaml.safe_dump(PLAY, sort_keys=False))
    inventory = tmp_path / "hosts.yml"
    # An address where nothing answers: a real connection attempt would fail the run.
    host = {"ansible_connection": connection, "ansible_host": "127.0.0.1", "ansible_port": 9}
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"gpu_box": host}}}))
    proc = subprocess.run(
        [
            "ansible-playbook",
            "--check",
            "-i",
            str(inventory),
            "-e",
            json.dumps({"nvidia_driver_reboot": allowed}),
            str(playbook),
        ],
        cwd=repo_root,
        env={**ansible_env, "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    # Role tasks are named "<role> : <task>" in the report.
    tasks = {
        t["task"]["name"].rpartition(" : ")[2]: t["hosts"]["gpu_box"]
        for t in json.loads(proc.stdout)["plays"][0]["tasks"]
    }
    reboot = tasks["Reboot the host to load the new driver"]
    told = tasks["Tell the user to reboot"]
    assert bool(reboot.get("rebooted")) is reboots, reboot
    assert bool(reboot.get("skipped")) is not reboots, reboot
    assert bool(told.get("skipped")) is reboots, told
    if not reboots:
        reason = "local connection" if connection == "local" else "nvidia_driver_reboot is false"
        assert reason in told["msg"], told
