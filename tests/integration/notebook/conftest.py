"""Helpers for the notebook integration tests: run the module and the role for real."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cleanup import remove_workbench

PREFIX = "wyvern-test-module-"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def run_module(ansible_env: dict[str, str], repo_root: Path) -> Callable[..., dict[str, Any]]:
    """Run wyvern.workbench.notebook_container ad hoc on localhost; return its result."""

    def run(args: dict[str, Any], check: bool = False) -> dict[str, Any]:
        env = dict(
            ansible_env,
            ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
            ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        )
        cmd = [
            "ansible",
            "localhost",
            "-c",
            "local",
            "-m",
            "wyvern.workbench.notebook_container",
            "-a",
            json.dumps(args),
            "--diff",
            "-e",
            "ansible_python_interpreter={{ ansible_playbook_python }}",
        ]
        if check:
            cmd.append("--check")
        proc = subprocess.run(
            cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=600
        )
        try:
            report = json.loads(proc.stdout)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"no JSON from ansible:\n{proc.stdout}\n{proc.stderr}") from exc
        return report["plays"][0]["tasks"][0]["hosts"]["localhost"]

    return run


@pytest.fixture
def container_name(docker_client, request: pytest.FixtureRequest) -> Iterator[str]:
    """A container name of this test run's own (parallel runs and worktrees never share
    one); it and its network are removed before and after the test (images are kept)."""
    test = request.node.name.replace("_", "-").replace("[", "-").replace("]", "")[:40]
    name = f"{PREFIX}{test}-{secrets.token_hex(3)}"
    remove_container(docker_client, name)
    yield name
    remove_container(docker_client, name)


def remove_container(docker_client, name: str) -> None:
    remove_workbench(docker_client, name)
