"""Each host role stops at once on an operating system it does not support."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

SUPPORTED = "supports Debian 12, Ubuntu 22.04 and Ubuntu 24.04"


@pytest.mark.parametrize("role", ["nvidia_driver", "docker_engine", "nvidia_container_toolkit"])
@pytest.mark.parametrize(
    ("distribution", "major", "version"), [("Fedora", "40", "40"), ("Ubuntu", "20", "20.04")]
)
def test_unsupported_os_fails_with_one_message(
    role: str,
    distribution: str,
    major: str,
    version: str,
    repo_root: Path,
    ansible_env: dict[str, str],
    tmp_path: Path,
) -> None:
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Apply a host role to a host it does not support",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "Pretend to be another operating system",
                            "ansible.builtin.set_fact": {
                                "ansible_facts": {
                                    "distribution": distribution,
                                    "distribution_major_version": major,
                                    "distribution_version": version,
                                }
                            },
                        },
                        {
                            "name": "Apply the role",
                            "ansible.builtin.include_role": {"name": f"wyvern.workbench.{role}"},
                        },
                    ],
                }
            ]
        )
    )
    proc = subprocess.run(
        [
            "ansible-playbook",
            "--inventory",
            str(repo_root / "inventory" / "local.yml"),
            str(playbook),
        ],
        cwd=repo_root,
        env=ansible_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    # The toolkit's dependency (docker_engine, the owner of daemon.json) runs first and
    # stops with the same list of supported systems.
    first = "docker_engine" if role == "nvidia_container_toolkit" else role
    assert (
        f"wyvern.workbench.{first} {SUPPORTED}; localhost runs {distribution} {version}."
        in " ".join(output.split())
    ), output
    # It failed first thing: no GPU probe, no docker query, nothing changed.
    assert "changed=0" in output and "failed=1" in output, output
    assert "Find PCI devices" not in output and "Ask whether a Docker daemon" not in output
