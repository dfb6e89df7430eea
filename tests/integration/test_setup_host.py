"""`make setup` on a control node that is not Debian: no apt-get, no Docker.

The machine is this one with apt-get and docker hidden: PATH holds only what a laptop that
drives a cloud workbench has (a shell, Python, ssh, rsync, make), so the script's real code
path runs, looking for the tools as it always does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CONTROL_NODE_TOOLS = ("bash", "ssh", "rsync", "id", "make", "ln", "mkdir", "touch", "env")


@pytest.fixture
def laptop_path(tmp_path: Path) -> str:
    """A PATH of one directory: the control node's tools, and no apt-get, docker or dockerd."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in CONTROL_NODE_TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is missing on this machine"
        (bin_dir / tool).symlink_to(found)
    # The system Python (a version manager's shim would need its own tools on PATH).
    python = Path("/usr/bin/python3")
    (bin_dir / "python3").symlink_to(python if python.exists() else shutil.which("python3"))
    for hidden in ("apt-get", "docker", "dockerd", "debootstrap"):
        assert not (bin_dir / hidden).exists()
    return str(bin_dir)


def run(cmd: list[str], cwd: Path, path: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = path
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_setup_host_readies_the_control_node_and_names_what_the_local_target_lacks(
    repo_root: Path, laptop_path: str
) -> None:
    script = str(repo_root / "scripts" / "setup-host.sh")
    setup = run([script], repo_root, laptop_path)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert "setup: control node ready" in setup.stdout, setup.stdout
    lacks = (
        "setup: the local target (make demo on this machine) would still need: "
        "a Debian 12 or Ubuntu 22.04/24.04 host"
    )
    assert lacks in setup.stdout, setup.stdout
    assert "docker.io debootstrap" in setup.stdout, setup.stdout
    assert "installing" not in setup.stdout  # nothing was tried without apt-get

    # `make demo` needs the local target: there the same words stop it.
    demo = run([script, "--local"], repo_root, laptop_path)
    assert demo.returncode == 1
    assert "the local target (make demo on this machine) needs: a Debian 12" in demo.stderr

    # Without rsync even the control node is not ready: a clear stop naming it.
    (Path(laptop_path) / "rsync").unlink()
    bare = run([script], repo_root, laptop_path)
    assert bare.returncode == 1
    assert "this machine has no apt-get; install the equivalents of: rsync" in bare.stderr


@pytest.mark.slow
def test_make_setup_without_apt_or_docker_makes_the_control_node(
    repo_root: Path, laptop_path: str, tmp_path: Path
) -> None:
    # A fresh clone: this checkout's files (committed or not), none of its build outputs.
    clone = tmp_path / "clone"
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo_root,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        source = repo_root / name
        if source.is_file() and not source.is_symlink():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    venv = clone / ".venv"
    setup = run(["make", "setup"], clone, laptop_path, timeout=900)
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
    assert "would still need: a Debian 12 or Ubuntu 22.04/24.04 host" in setup.stdout
    # Ansible with its bundled collections, the AWS SDK and the Docker SDK, in the new venv.
    probe = run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import ansible, boto3, docker; from ansible_collections.amazon.aws import plugins",
        ],
        clone,
        laptop_path,
    )
    assert probe.returncode == 0, probe.stderr
    version = run([str(venv / "bin" / "ansible-playbook"), "--version"], clone, laptop_path)
    assert version.returncode == 0 and "core 2.19" in version.stdout, version.stdout
    link = clone / "collections" / "ansible_collections" / "wyvern" / "workbench"
    assert (link / "galaxy.yml").is_file()
