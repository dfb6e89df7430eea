"""playbooks/configure.yml on this very machine: no GPU, Docker already running.

The host roles must see that there is nothing to do: the GPU roles skip themselves with
one message each, docker_engine leaves the running daemon alone, and the run reports
changed=0 without restarting Docker.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def _messages(result: dict) -> list[str]:
    messages = []
    for play in result["plays"]:
        for task in play["tasks"]:
            msg = task["hosts"].get("localhost", {}).get("msg")
            if isinstance(msg, str):
                messages.append(msg)
    return messages


def _dockerd_pid() -> str:
    pidfile = Path("/var/run/docker.pid")
    return pidfile.read_text().strip() if pidfile.exists() else ""


@pytest.fixture
def workbench_inventory(tmp_path: Path) -> Path:
    inventory = tmp_path / "workbench.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "workbench": {
                    "hosts": {
                        "localhost": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": sys.executable,
                        }
                    }
                }
            }
        )
    )
    return inventory


def test_configure_on_a_cpu_host_with_docker_changes_nothing(
    repo_root: Path, ansible_env: dict[str, str], docker_client, workbench_inventory: Path
) -> None:
    pid_before = _dockerd_pid()
    proc = subprocess.run(
        [
            "ansible-playbook",
            # inventory/local.yml brings the play-wide group_vars (workbench_become ...).
            "--inventory",
            str(repo_root / "inventory" / "local.yml"),
            "--inventory",
            str(workbench_inventory),
            str(repo_root / "playbooks" / "configure.yml"),
        ],
        cwd=repo_root,
        env={**ansible_env, "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    stats = result["stats"]["localhost"]
    assert stats["changed"] == 0, stats
    assert stats["failures"] == 0 and stats["unreachable"] == 0, stats

    messages = _messages(result)
    assert any(m.startswith("nvidia_driver: no NVIDIA GPU") for m in messages), messages
    assert any(m.startswith("nvidia_container_toolkit: no NVIDIA GPU") for m in messages), messages
    assert any("already answers" in m for m in messages), messages

    # The shared daemon kept running: same process, still answering.
    assert _dockerd_pid() == pid_before
    assert docker_client.ping()
