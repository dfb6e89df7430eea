"""playbooks/configure.yml on this very machine, Docker already running, real and --check.

The host roles must see that there is nothing to do: without a GPU the GPU roles skip
themselves with one message each, docker_engine leaves the running daemon alone, and the
run reports changed=0 without restarting Docker; a dry run says the same.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.gpu import HAS_GPU


def _messages(result: dict) -> list[str]:
    messages = []
    for play in result["plays"]:
        for task in play["tasks"]:
            msg = task["hosts"].get("localhost", {}).get("msg")
            if isinstance(msg, str):
                messages.append(msg)
    return messages


def _dockerd_process() -> tuple[int, int]:
    """(pid, start time in clock ticks) of the running dockerd; fails when there is none.

    The start time tells a restarted daemon that got the same pid from the old one.
    """
    candidates = []
    pidfile = Path("/var/run/docker.pid")
    if pidfile.exists() and pidfile.read_text().strip().isdigit():
        candidates.append(int(pidfile.read_text().strip()))
    candidates += [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    for pid in candidates:
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if comm == "dockerd":
            # Field 22 (starttime) counted after the ")" that ends the command name.
            return pid, int(stat.rsplit(")", 1)[1].split()[19])
    raise AssertionError("no dockerd process is running on this machine")


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


@pytest.mark.parametrize("check_mode", [True, False], ids=["check", "apply"])
def test_configure_on_a_host_with_docker_changes_nothing(
    check_mode: bool,
    repo_root: Path,
    ansible_env: dict[str, str],
    docker_client,
    workbench_inventory: Path,
) -> None:
    daemon_before = _dockerd_process()
    proc = subprocess.run(
        [
            "ansible-playbook",
            *(["--check"] if check_mode else []),
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
    # The GPU roles skip themselves exactly where the product's GPU rule finds no GPU.
    skipped = {
        role: any(m.startswith(f"{role}: no NVIDIA GPU") for m in messages)
        for role in ("nvidia_driver", "nvidia_container_toolkit")
    }
    assert skipped == {"nvidia_driver": not HAS_GPU, "nvidia_container_toolkit": not HAS_GPU}, (
        messages
    )
    assert any("already answers" in m for m in messages), messages

    # docker_engine is reached twice (the play's role, the toolkit's dependency); the daemon
    # is asked once per run, not four times (a no-op rerun's cost, BENCHMARKS.md).
    def ran(suffix: str) -> list[dict]:
        return [
            task["hosts"]["localhost"]
            for play in result["plays"]
            for task in play["tasks"]
            if task["task"]["name"].endswith(suffix)
            and not task["hosts"].get("localhost", {}).get("skipped")
        ]

    probes = ran(
        ": Ask the Docker daemon for its version and runtimes, and Python for the Docker SDK"
    )
    assert len(probes) == 1, probes
    # Both GPU roles decide on one look-up of the PCI bus (the host fact wyvern_gpu).
    assert len(ran(": Find NVIDIA GPUs on the PCI bus")) == 1

    # The shared daemon kept running: the same process, still answering.
    assert _dockerd_process() == daemon_before
    assert docker_client.ping()
