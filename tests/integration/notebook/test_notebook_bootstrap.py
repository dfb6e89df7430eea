"""The role's base bootstrap: debootstrap into a directory, import it with a FROM scratch build."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

import docker
import pytest

from .conftest import PREFIX

IMAGE = f"{PREFIX}base:bookworm"


@pytest.mark.slow
def test_bootstrap_makes_a_debian_python_base(
    repo_root: Path, ansible_env: dict[str, str], docker_client, tmp_path: Path
) -> None:
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed (make setup installs it)")
    with contextlib.suppress(docker.errors.ImageNotFound):
        docker_client.images.remove(IMAGE)
    try:
        proc = subprocess.run(
            [
                "ansible-playbook",
                str(repo_root / "tests/support/playbooks/notebook_bootstrap.yml"),
                "-e",
                f"notebook_home={tmp_path}",
                "-e",
                f"notebook_bootstrap_image={IMAGE}",
            ],
            cwd=repo_root,
            env=ansible_env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stdout[-4000:]
        output = docker_client.containers.run(
            IMAGE,
            [
                "sh",
                "-c",
                "python3 --version && test -s /etc/ssl/certs/ca-certificates.crt && echo certs-ok",
            ],
            remove=True,
        ).decode()
        assert "Python 3.11" in output and "certs-ok" in output
        assert not (tmp_path / "bootstrap").exists()  # the rootfs and its archive are cleaned up
    finally:
        # A test-only tag; the shared wyvern/debian-base:bookworm is never touched.
        with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
            docker_client.images.remove(IMAGE)
