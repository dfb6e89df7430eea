"""The auto-stop role's systemd path, for real: a Debian 12 container whose PID 1 is
systemd stands in for an EC2 instance (target aws: the agent powers the machine off from
inside). Ansible installs the role over a Docker connection, systemd's timers run the
agent and the hard limit, and `shutdown -h now` really halts the "instance" (the container
exits), as it would stop or terminate an instance by its shutdown behaviour.

- idle path: a fresh headless-run heartbeat keeps it up; once the heartbeat stops, the
  agent's timer powers it off; a second role run changes nothing;
- hard limit: its own timer powers the instance off even when the agent is broken;
- absent (teardown): the timers and units are gone from systemd.

The host's Docker socket is mounted so that the agent can see that the workbench's notebook
container does not exist (a stopped notebook has no kernel to keep the instance up).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.base_image import SYSTEMD_RUN_OPTIONS, build_systemd_image

pytestmark = pytest.mark.slow

HOME = "/var/lib/wyvern/sd"
INTERVAL = 1
IDLE_MINUTES = 0.1  # 6 s
HEARTBEAT = 3


class Instance:
    """A systemd container reached by Ansible's Docker connection."""

    def __init__(self, docker_client, image: str, tmp_path: Path, repo_root: Path, env) -> None:
        self.client, self.tmp, self.root, self.env = docker_client, tmp_path, repo_root, env
        self.name = f"wyvern-test-systemd-{secrets.token_hex(4)}"
        self.container = docker_client.containers.run(
            image,
            name=self.name,
            detach=True,
            **{
                **SYSTEMD_RUN_OPTIONS,
                "volumes": {
                    **SYSTEMD_RUN_OPTIONS["volumes"],
                    "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
                },
            },
        )
        self.wait_for_systemd()
        self.inventory = tmp_path / "inventory.yml"
        self.inventory.write_text(
            yaml.safe_dump(
                {
                    "all": {
                        "hosts": {
                            "instance": {
                                "ansible_connection": "community.docker.docker_api",
                                "ansible_host": self.name,
                                "ansible_python_interpreter": "/usr/bin/python3",
                            }
                        }
                    }
                }
            )
        )

    def wait_for_systemd(self) -> None:
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline:
            state = self.exec("systemctl", "is-system-running").stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.5)
        raise AssertionError(f"systemd in {self.name} did not come up: {state!r}")

    def exec(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "exec", self.name, *argv], capture_output=True, text=True, timeout=60
        )

    def play(self, entry: str, extra: dict[str, object]) -> subprocess.CompletedProcess[str]:
        playbook = self.tmp / f"autostop-{entry}.yml"
        playbook.write_text(
            yaml.safe_dump(
                [
                    {
                        "name": f"Run the autostop role's {entry} entry point",
                        "hosts": "instance",
                        "gather_facts": False,
                        "tasks": [
                            {
                                "name": "Run the role",
                                "ansible.builtin.include_role": {
                                    "name": "wyvern.workbench.autostop",
                                    "tasks_from": f"{entry}.yml",
                                },
                            }
                        ],
                    }
                ]
            )
        )
        return subprocess.run(
            [
                "ansible-playbook",
                "-i",
                str(self.inventory),
                str(playbook),
                "-e",
                json.dumps(extra),
            ],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    def running(self) -> bool:
        self.container.reload()
        return self.container.status == "running"

    def wait_halted(self, timeout: float) -> float:
        """Wait until the instance has powered off; return how long it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if not self.running():
                return time.monotonic() - start
            time.sleep(0.5)
        raise AssertionError(f"{self.name} still runs after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        """The agent's log, read from the container's files even after it halted."""
        out = subprocess.run(
            ["docker", "cp", f"{self.name}:{HOME}/autostop/agent.log", "-"],
            capture_output=True,
            timeout=60,
        )
        if out.returncode != 0:
            return f"(no agent log: {out.stderr.decode(errors='replace').strip()})"
        import io
        import tarfile

        with tarfile.open(fileobj=io.BytesIO(out.stdout)) as archive:
            member = archive.extractfile("agent.log")
            return member.read().decode() if member else ""

    def remove(self) -> None:
        self.container.remove(force=True)


@pytest.fixture
def instance(tmp_path: Path, repo_root: Path, ansible_env, docker_client) -> Iterator[Instance]:
    image = build_systemd_image(docker_client)
    machine = Instance(docker_client, image, tmp_path, repo_root, ansible_env)
    try:
        yield machine
    finally:
        machine.remove()


def settings(instance: Instance, **overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "autostop_name": f"{instance.name}-notebook",  # no such container: notebook down
        "autostop_notebook_home": HOME,
        "autostop_target": "aws",
        "autostop_idle_action": "stop",
        "autostop_idle_minutes": IDLE_MINUTES,
        "autostop_warn_minutes": 0.02,
        "autostop_max_hours": 0,
        "autostop_interval_seconds": INTERVAL,
        "autostop_run_heartbeat_seconds": HEARTBEAT,
    }
    base.update(overrides)
    return base


HEARTBEAT_SCRIPT = """\
import json, os, time
path = '{home}/outputs/20270115-120000/progress.json'
os.makedirs(os.path.dirname(path), exist_ok=True)
while not os.path.exists('/tmp/run-finished'):
    with open(path + '.tmp', 'w') as handle:
        json.dump({{'state': 'running', 'updated_at': time.time()}}, handle)
    os.replace(path + '.tmp', path)
    time.sleep(1)
"""


def start_heartbeat(instance: Instance) -> None:
    """A headless run in progress, as the workload writes it: progress.json every second."""
    subprocess.run(
        [
            "docker",
            "exec",
            "-d",
            instance.name,
            "python3",
            "-c",
            HEARTBEAT_SCRIPT.format(home=HOME),
        ],
        check=True,
    )


def unit(instance: Instance) -> str:
    return f"{instance.name}-notebook"


def test_systemd_timers_power_the_instance_off_once_idle(instance: Instance) -> None:
    # A headless run in progress: its heartbeat is fresh every second.
    start_heartbeat(instance)
    first = instance.play("main", settings(instance))
    assert first.returncode == 0, first.stdout[-4000:]
    assert "Auto-stop: stops after 6 s idle; no hard limit (systemd;" in first.stdout, first.stdout
    second = instance.play("main", settings(instance))
    assert second.returncode == 0, second.stdout[-4000:]
    assert "changed=0" in second.stdout, second.stdout[-4000:]
    for kind in ("autostop", "hardstop"):
        timer = f"wyvern-{kind}-{unit(instance)}.timer"
        assert instance.exec("systemctl", "is-active", timer).stdout.strip() == "active", timer
        assert instance.exec("systemctl", "is-enabled", timer).stdout.strip() == "enabled", timer

    # Three windows with a fresh heartbeat: the instance stays up, and the timer has
    # really been running the agent (its status says why it keeps the instance up).
    until = time.monotonic() + 3 * IDLE_MINUTES * 60
    while time.monotonic() < until:
        assert instance.running(), instance.log()
        time.sleep(1)
    status = json.loads(instance.exec("cat", f"{HOME}/autostop/status.json").stdout)
    assert status["verdict"] == "active", status
    assert any(r.startswith("runs active") for r in status["reasons"]), status

    # The run ends (its heartbeat stops): the agent's timer powers the instance off.
    instance.exec("touch", "/tmp/run-finished")
    took = instance.wait_halted(IDLE_MINUTES * 60 + HEARTBEAT + 60)
    log = instance.log()
    # The decision is logged before the power-off; the line after it may not be written
    # before the halt.
    assert "power off; the instance stops" in log, log
    assert "idle for" in log, log
    assert took >= IDLE_MINUTES * 60, took  # never before the window


def test_systemd_hard_limit_powers_off_even_with_a_broken_agent(instance: Instance) -> None:
    # Idle stop off. On aws the limit counts from the boot, which a container shares with
    # the host: set it to fall 45 s from now.
    btime = next(
        float(line.split()[1])
        for line in instance.exec("cat", "/proc/stat").stdout.splitlines()
        if line.startswith("btime ")
    )
    deadline = time.time() + 45
    hours = (deadline - btime) / 3600
    result = instance.play(
        "main", settings(instance, autostop_idle_minutes=0, autostop_max_hours=hours)
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert "hard stop at" in result.stdout, result.stdout[-4000:]
    # Break the agent: the hard limit must not depend on it.
    broken = instance.exec(
        "sh",
        "-c",
        "printf 'import sys\\nsys.exit(3)\\n' > /usr/local/lib/wyvern/wyvern_autostop.py",
    )
    assert broken.returncode == 0, broken.stderr
    instance.wait_halted(deadline - time.time() + 60)
    assert time.time() >= deadline - 1, "powered off before the hard limit"
    log = instance.log()
    assert "hard limit" in log, log
    # The decision is logged before the power-off; the line after it may not be written
    # before the halt.
    assert "power off; the instance stops" in log, log


def test_systemd_absent_takes_the_timers_off(instance: Instance) -> None:
    start_heartbeat(instance)  # the instance "booted" long ago: keep the idle stop away
    result = instance.play("main", settings(instance, autostop_idle_minutes=30))
    assert result.returncode == 0, result.stdout[-4000:]
    listed = instance.exec("systemctl", "list-timers", "--all", "--no-pager").stdout
    assert f"wyvern-autostop-{unit(instance)}.timer" in listed, listed
    result = instance.play("absent", settings(instance))
    assert result.returncode == 0, result.stdout[-4000:]
    listed = instance.exec("systemctl", "list-timers", "--all", "--no-pager").stdout
    assert unit(instance) not in listed, listed
    units = instance.exec("ls", "/etc/systemd/system").stdout
    assert unit(instance) not in units, units
    again = instance.play("absent", settings(instance))
    assert again.returncode == 0, again.stdout[-4000:]
    assert "changed=0" in again.stdout, again.stdout[-4000:]
    assert instance.running()
