"""playbooks/stop.yml and start.yml on the local target, with the real notebook image.

Stop keeps the container (token, port, outputs); start brings the same one back, healthy,
with the same token; both change nothing the second time; start never makes a notebook.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.cleanup import remove_workbench
from tests.support.outputs import host_notebook_home
from tests.support.playbook import PlaybookRun, run_playbook
from tests.support.ports import reserved_port

# The notebook as site.yml's notebook play makes it, on the host that target.yml selects.
MAKE = """\
- name: Select the workbench host
  ansible.builtin.import_playbook: {root}/playbooks/target.yml

- name: Build and start the notebook
  ansible.builtin.import_playbook: {root}/playbooks/notebook.yml
"""


def _flat(run: PlaybookRun) -> str:
    return " ".join(run.output.split())


def _jupyter_status(port: int, token: str) -> int:
    answer = requests.get(
        f"http://127.0.0.1:{port}/api/status",
        headers={"Authorization": f"token {token}"},
        timeout=10,
    )
    return answer.status_code


@pytest.fixture
def bench(docker_client, notebook_image: str) -> Iterator[tuple[str, int]]:
    name = f"wb-ss-{secrets.token_hex(3)}"

    def remove() -> None:
        remove_workbench(docker_client, name)
        shutil.rmtree(host_notebook_home(name), ignore_errors=True)

    remove()
    with reserved_port() as port:
        try:
            yield name, port
        finally:
            remove()


def test_local_stop_and_start_keep_the_notebook_and_its_token(
    repo_root: Path, ansible_env, docker_client, bench, tmp_path: Path
) -> None:
    name, port = bench
    extra = {"workbench_name": name, "notebook_port": port}

    # Nothing to start yet: start says how to make one and makes nothing.
    nothing = run_playbook(repo_root, "playbooks/start.yml", ansible_env, extra)
    assert nothing.rc != 0
    assert f"No notebook container `{name}` on localhost to start" in _flat(nothing), nothing.tail()
    assert name not in {c.name for c in docker_client.containers.list(all=True)}

    make = tmp_path / "make.yml"
    make.write_text(MAKE.format(root=repo_root))
    made = run_playbook(repo_root, str(make), ansible_env, extra)
    assert made.rc == 0, made.tail(80)
    container = docker_client.containers.get(name)
    token_file = host_notebook_home(name) / "token"
    token = token_file.read_text().strip()
    assert _jupyter_status(port, token) == 200

    stop = run_playbook(repo_root, "playbooks/stop.yml", ansible_env, extra)
    assert stop.rc == 0, stop.tail(80)
    assert stop.changed > 0
    assert f"Notebook {name} on localhost stopped; its token, outputs and data are kept" in _flat(
        stop
    )
    container.reload()
    assert container.status == "exited"  # stopped, not removed
    with pytest.raises(requests.ConnectionError):
        _jupyter_status(port, token)

    stop_again = run_playbook(repo_root, "playbooks/stop.yml", ansible_env, extra)
    assert stop_again.rc == 0, stop_again.tail(80)
    assert stop_again.changed == 0, stop_again.tail(80)
    assert "was stopped already" in _flat(stop_again)

    start = run_playbook(repo_root, "playbooks/start.yml", ansible_env, extra)
    assert start.rc == 0, start.tail(80)
    assert start.changed > 0
    # The same container, started again (not made anew), healthy, with the same token.
    assert docker_client.containers.get(name).id == container.id
    assert docker_client.containers.get(name).status == "running"
    assert token_file.read_text().strip() == token
    assert _jupyter_status(port, token) == 200
    assert f"Notebook localhost: http://127.0.0.1:{port}" in _flat(start), start.tail(80)
    assert token not in start.output

    start_again = run_playbook(repo_root, "playbooks/start.yml", ansible_env, extra)
    assert start_again.rc == 0, start_again.tail(80)
    assert start_again.changed == 0, start_again.tail(80)
    assert docker_client.containers.get(name).id == container.id
