"""Shared fixtures: a Docker engine, a moto EC2 server, a local Debian base image."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# ansible-core (2.19) replaces sys.intern with a wrapper object when its module_utils are
# imported, and torch._dynamo, imported by torchvision, then refuses to load
# ("substitute_in_graph expects a function"). One pytest process holds both the module
# tests and the workload tests, so load torchvision first, while sys.intern is the builtin.
if importlib.util.find_spec("torchvision") is not None:
    importlib.import_module("torchvision")

from tests.support.base_image import BASE_IMAGE, build_base_image
from tests.support.docker_engine import ensure_docker_engine
from tests.support.moto import MotoServer, moto_server

ROOT = Path(__file__).resolve().parent.parent
MARKERS_BY_DIR = {
    "unit": "unit",
    "integration": "integration",
    "molecule": "molecule",
    "e2e": "e2e",
}


# Fixtures that make a test slow on a fresh machine (the notebook image: minutes to build).
SLOW_FIXTURES = {"notebook_image"}
# `make test-fast` (-m fast): every unit test plus these integration modules, each a few
# seconds of real Ansible and Docker with no image build, no training, no Molecule.
FAST_INTEGRATION = {
    "integration/test_harness.py",
    "integration/test_host_roles_preflight.py",
    "integration/test_nvidia_driver_reboot.py",
    "integration/test_teardown_outputs.py",
    "integration/test_configure_localhost.py",
    "integration/notebook/test_notebook_container_ansiballz.py",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The directory a test lives in is its kind; `-m unit` and friends select on it.
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        marker = MARKERS_BY_DIR.get(parts[0]) if parts else None
        if marker:
            item.add_marker(getattr(pytest.mark, marker))
        slow = bool(SLOW_FIXTURES & set(getattr(item, "fixturenames", ())))
        if slow:
            item.add_marker(pytest.mark.slow)
        if not slow and (marker == "unit" or "/".join(parts) in FAST_INTEGRATION):
            item.add_marker(pytest.mark.fast)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def docker_client():
    return ensure_docker_engine()


@pytest.fixture(scope="session")
def debian_base_image(docker_client) -> str:
    """A Debian 12 (minbase + python3) image built locally once, cached by tag."""
    return build_base_image(docker_client, BASE_IMAGE)


@pytest.fixture(scope="session")
def moto_session() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


@pytest.fixture
def moto(moto_session: MotoServer) -> Iterator[MotoServer]:
    """A moto EC2 server with no resources but its defaults; reset after each test."""
    moto_session.reset()
    yield moto_session
    moto_session.reset()


@pytest.fixture(scope="session")
def ansible_env(repo_root: Path) -> dict[str, str]:
    """Environment for ansible-playbook children: this checkout's config, no colour."""
    env = dict(os.environ)
    # The venv's ansible-* commands, whether or not the caller activated it.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        ANSIBLE_CONFIG=str(repo_root / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        PY_COLORS="0",
    )
    return env


@pytest.fixture(scope="session")
def notebook_image(debian_base_image, repo_root: Path) -> str:
    """The notebook image (name:content-hash tag), built by the notebook role's own tasks.

    Built once per content (Dockerfile + requirements.lock + workload package), then reused
    by every session; tests must not remove it.
    """
    from tests.support.notebook_image import build_notebook_image

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(ANSIBLE_CONFIG=str(repo_root / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    return build_notebook_image(repo_root, env)
