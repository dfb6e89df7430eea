"""Auto-stop on the local target, end to end: the notebook and autostop roles on this
machine (no systemd: the background loops), a short idle window and a fast interval.

The container is not stopped while a headless run's heartbeat is fresh, and is stopped
once it goes stale; a second role run changes nothing. The time from the last activity to
the stop is measured three times (BENCHMARKS.md): once from the run's last heartbeat, twice
from a `docker start` (the start is the last activity).
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.support.ports import reserved_port
from tests.unit.roles.autostop_support import load

from .conftest import PREFIX, remove_container
from .test_notebook_role import recap

agent, hard = load()
IDLE_MINUTES = 0.2  # 12 s
WINDOW = IDLE_MINUTES * 60
INTERVAL = 1
HEARTBEAT = 3

PLAYBOOK = """\
- name: Start the notebook with auto-stop
  hosts: localhost
  gather_facts: true
  roles:
    - role: wyvern.workbench.notebook
    - role: wyvern.workbench.autostop
"""


class Heartbeat(threading.Thread):
    """A headless run as the workload writes it: progress.json refreshed every second."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.stop, self.last = path, threading.Event(), 0.0
        self.beat()

    def beat(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.last = time.time()
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"state": "running", "updated_at": self.last}))
        tmp.replace(self.path)

    def run(self) -> None:
        while not self.stop.wait(1):
            self.beat()


def container_state(docker_client, name: str) -> dict:
    return docker_client.api.inspect_container(name)["State"]


def wait_stopped(docker_client, name: str, timeout: float) -> float:
    """Wait for the container to stop; return when it did (Docker's FinishedAt)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = container_state(docker_client, name)
        if not state["Running"]:
            return hard.parse_docker_time(state["FinishedAt"])
        time.sleep(0.5)
    raise AssertionError(f"{name} still runs after {timeout} s")


@pytest.fixture
def workbench(tmp_path: Path, repo_root: Path, ansible_env, docker_client, notebook_image: str):
    playbook = tmp_path / "site.yml"
    playbook.write_text(PLAYBOOK)
    name = f"{PREFIX}autostop-e2e-{secrets.token_hex(3)}"
    home, etc = tmp_path / "home", tmp_path / "etc"
    remove_container(docker_client, name)
    with reserved_port() as port:
        extra = [
            f"notebook_name={name}",
            f"notebook_home={home}",
            f"notebook_port={port}",
            f"workbench_idle_minutes={IDLE_MINUTES}",
            "workbench_max_hours=0",
            "autostop_warn_minutes=0.05",
            f"autostop_interval_seconds={INTERVAL}",
            f"autostop_run_heartbeat_seconds={HEARTBEAT}",
            f"autostop_lib_dir={tmp_path / 'lib'}",
            f"autostop_config_dir={etc}",
        ]

        def run() -> subprocess.CompletedProcess[str]:
            args = [a for e in extra for a in ("-e", e)]
            return subprocess.run(
                ["ansible-playbook", str(playbook), *args],
                cwd=repo_root,
                env=ansible_env,
                capture_output=True,
                text=True,
                timeout=900,
            )

        yield run, home, name
        config = etc / f"{name}.json"
        if config.exists():
            subprocess.run(
                [
                    "/usr/bin/python3",
                    str(tmp_path / "lib" / "wyvern_autostop.py"),
                    "--config",
                    str(config),
                    "--stop-loops",
                ],
                check=False,
            )
    remove_container(docker_client, name)


def test_idle_stop_on_local_waits_for_a_headless_run(workbench, docker_client, capsys) -> None:
    run, home, name = workbench
    beat = Heartbeat(home / "outputs" / "20270115-120000" / "progress.json")
    beat.start()
    first = run()
    assert first.returncode == 0, first.stdout[-4000:]
    assert "Auto-stop: stops after 12 s idle; no hard limit (loop;" in first.stdout
    second = run()
    assert second.returncode == 0, second.stdout[-4000:]
    assert recap(second.stdout)["changed"] == 0, second.stdout[-4000:]

    # Twice the window with a fresh heartbeat: the notebook keeps running.
    until = time.monotonic() + 2 * WINDOW
    while time.monotonic() < until:
        assert container_state(docker_client, name)["Running"], (
            home / "autostop" / "agent.log"
        ).read_text()
        time.sleep(1)
    status = json.loads((home / "autostop" / "status.json").read_text())
    assert status["verdict"] == "active"
    assert any(r.startswith("runs active: running: 20270115-120000") for r in status["reasons"])

    # The run's heartbeat stops (the run died): the container stops after the window.
    beat.stop.set()
    beat.join()
    stops = [wait_stopped(docker_client, name, WINDOW + HEARTBEAT + 60)]
    references = [beat.last]
    actions = [last_action(home)]
    log = (home / "autostop" / "agent.log").read_text()
    assert f"stopped container {name}" in log
    assert "stop the notebook container" in log

    # Twice more from a start: the start is the last activity.
    for _ in range(2):
        docker_client.api.start(name)
        references.append(hard.parse_docker_time(container_state(docker_client, name)["StartedAt"]))
        stops.append(wait_stopped(docker_client, name, WINDOW + 90))
        actions.append(last_action(home))
    # Two figures: the agent's own (from the last activity it saw to its action: the window
    # plus at most one interval), and the user's (from the real last activity, the run's
    # last heartbeat or the start, to the container being stopped). The difference is the
    # time Jupyter takes to answer after a start (unreadable counts as activity), the
    # heartbeat's tolerance, and Docker stopping Jupyter.
    agent_lags = [a["acted_at"] - a["last_active"] for a in actions]
    user_lags = [stop - ref for stop, ref in zip(stops, references, strict=True)]
    with capsys.disabled():
        print(
            f"\nAUTOSTOP window {WINDOW:g} s, interval {INTERVAL} s: "
            f"agent (last activity seen -> action) {', '.join(f'{v:.1f}' for v in agent_lags)} s, "
            f"median {statistics.median(agent_lags):.1f}; "
            f"user (last activity -> container stopped) {', '.join(f'{v:.1f}' for v in user_lags)} s, "
            f"median {statistics.median(user_lags):.1f}"
        )
    out = os.environ.get("WYVERN_AUTOSTOP_BENCH")
    if out:
        Path(out).write_text(
            json.dumps(
                {"window": WINDOW, "interval": INTERVAL, "agent": agent_lags, "user": user_lags}
            )
        )
    assert all(a["last_active"] >= ref - 0.5 for a, ref in zip(actions, references, strict=True))
    assert all(WINDOW <= lag <= WINDOW + INTERVAL + 2 for lag in agent_lags), agent_lags
    assert all(lag >= WINDOW for lag in user_lags), user_lags  # never early


def last_action(home: Path) -> dict:
    """The agent's record of its last action (kept once the container is stopped)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = json.loads((home / "autostop" / "status.json").read_text())
        action = status.get("last_action") or (status if status.get("acted_at") else None)
        if action:
            return action
        time.sleep(0.5)
    raise AssertionError(f"no action recorded: {status}")
