"""docker_engine_info: the docker_engine role's one question about Docker on the host."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml
from ansible_collections.wyvern.workbench.plugins.modules import docker_engine_info
from ansible_collections.wyvern.workbench.plugins.modules.docker_engine_info import (
    INFO_FORMAT,
    parse_info,
)

from tests.support.adhoc import run_module
from tests.support.module_docs import assert_option_agrees


def test_an_answering_daemon_gives_its_version_and_sorted_runtimes() -> None:
    out = json.dumps({"version": "24.0.7", "runtimes": {"runc": {}, "nvidia": {"path": "x"}}})
    assert parse_info(0, out, "") == {
        "version": "24.0.7",
        "runtimes": ["nvidia", "runc"],
        "error": "",
    }


@pytest.mark.parametrize(
    ("rc", "out", "err", "reason"),
    [
        (
            1,
            "",
            "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.\n",
            "Cannot connect",
        ),
        # Old clients print the client part and exit 0 with no server version.
        (0, '{"version": "", "runtimes": null}', "", "docker info exited with 0"),
        (0, "not json", "", "unreadable docker info"),
        (2, "", "", "exited with 2"),
    ],
)
def test_a_daemon_that_does_not_answer_gives_no_version_and_says_why(
    rc: int, out: str, err: str, reason: str
) -> None:
    answer = parse_info(rc, out, err)
    assert answer["version"] == ""
    assert answer["runtimes"] == []
    assert reason in answer["error"]


def _fake_docker(tmp_path: Path, script: str) -> Path:
    cli = tmp_path / "fake-docker"
    cli.write_text("#!/bin/sh\n" + script)
    cli.chmod(0o755)
    return cli


def _run_module(tmp_path: Path, docker_cli: str) -> dict:
    return run_module(
        "wyvern.workbench.docker_engine_info",
        f"docker_cli={docker_cli}",
        tmp_path,
        "-e",
        f"ansible_python_interpreter={sys.executable}",
    )


def test_documentation_agrees_with_the_argument_spec() -> None:
    doc = yaml.safe_load(docker_engine_info.DOCUMENTATION)["options"]
    assert set(doc) == set(docker_engine_info.ARGUMENT_SPEC)
    for option, spec in docker_engine_info.ARGUMENT_SPEC.items():
        assert_option_agrees(doc[option], spec)


def test_the_module_asks_the_cli_and_this_python(tmp_path: Path) -> None:
    """As Ansible runs it: the CLI gets the format, the answer comes back, and the SDK
    question is answered by the Python that runs the module."""
    seen = tmp_path / "argv"
    cli = _fake_docker(
        tmp_path,
        f'printf "%s\\n" "$@" > {seen}\necho \'{{"version": "27.1.0", "runtimes": {{"runc": {{}}}}}}\'\n',
    )
    result = _run_module(tmp_path, str(cli))
    assert result["changed"] is False
    assert (result["version"], result["runtimes"], result["error"]) == ("27.1.0", ["runc"], "")
    assert seen.read_text().splitlines() == ["info", "--format", INFO_FORMAT]
    assert result["sdk"] is (importlib.util.find_spec("docker") is not None)

    down = _fake_docker(tmp_path, 'echo "Cannot connect to the Docker daemon" >&2\nexit 1\n')
    result = _run_module(tmp_path, str(down))
    assert result["version"] == "" and "Cannot connect" in result["error"]

    result = _run_module(tmp_path, str(tmp_path / "no-such-docker"))
    assert result["version"] == "" and "no-such-docker" in result["error"]
