"""docker_engine in check mode on a fresh Debian 12 host (the local base image, no Docker):
the role plans the install without failing and changes nothing.

A converged host's dry run is in test_configure_localhost.py (changed=0).
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import yaml

PLAY = [
    {
        "name": "Plan Docker on a fresh host",
        "hosts": "all",
        "tasks": [
            {
                "name": "Apply the docker_engine role",
                "ansible.builtin.include_role": {"name": "wyvern.workbench.docker_engine"},
            }
        ],
    }
]


@pytest.fixture
def fresh_host(docker_client, debian_base_image: str) -> Iterator[str]:
    name = f"wyvern-test-docker-engine-check-{secrets.token_hex(3)}"
    container = docker_client.containers.run(
        debian_base_image, ["sleep", "900"], name=name, detach=True
    )
    try:
        yield name
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def test_dry_run_on_a_fresh_host_plans_without_failing(
    repo_root: Path, ansible_env: dict[str, str], docker_client, fresh_host: str, tmp_path: Path
) -> None:
    playbook = tmp_path / "plan.yml"
    playbook.write_text(yaml.safe_dump(PLAY, sort_keys=False))
    proc = subprocess.run(
        [
            "ansible-playbook",
            "--check",
            "-i",
            f"{fresh_host},",
            "-c",
            "community.docker.docker",
            str(playbook),
        ],
        cwd=repo_root,
        env=ansible_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "changed=0" not in output.split("PLAY RECAP")[-1], output[-2000:]  # a real plan
    check = docker_client.containers.get(fresh_host).exec_run(["sh", "-c", "command -v dockerd"])
    assert check.exit_code != 0, "check mode installed Docker"
