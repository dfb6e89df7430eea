"""The notebook role on localhost: sync, reuse the built image, start, report, changed=0 on rerun."""

from __future__ import annotations

import contextlib
import re
import subprocess
from pathlib import Path

import docker
import pytest

from .conftest import PREFIX, free_port

PLAYBOOK = """\
- name: Run the notebook role
  hosts: localhost
  gather_facts: true
  roles:
    - role: wyvern.workbench.notebook
  post_tasks:
    - name: Show the status fact
      ansible.builtin.debug:
        msg: "STATUS keys={{ notebook_status.keys() | sort | join(',') }} torch={{ notebook_status.probe.torch }}"
      when: notebook_state == 'started'
"""


def play(
    repo_root: Path, env: dict[str, str], playbook: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ansible-playbook", str(playbook), *extra],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def recap(output: str) -> dict[str, int]:
    match = re.search(r"localhost\s*:\s*(.*)", output.split("PLAY RECAP")[-1])
    assert match, output[-3000:]
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}


@pytest.fixture
def role_run(
    tmp_path: Path, repo_root: Path, ansible_env: dict[str, str], docker_client, notebook_image: str
):
    playbook = tmp_path / "notebook.yml"
    playbook.write_text(PLAYBOOK)
    name = f"{PREFIX}role"
    port = free_port()
    extra = [
        "-e",
        f"notebook_name={name}",
        "-e",
        f"notebook_home={tmp_path / 'home'}",
        "-e",
        f"notebook_port={port}",
    ]
    yield (
        (lambda *more: play(repo_root, ansible_env, playbook, *extra, *more)),
        tmp_path / "home",
        port,
    )
    with contextlib.suppress(docker.errors.NotFound):
        docker_client.containers.get(name).remove(force=True)
    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        docker_client.networks.get(f"{name}-net").remove()


def test_role_starts_the_notebook_and_is_idempotent(
    role_run, notebook_image: str, docker_client
) -> None:
    run, home, port = role_run
    first = run()
    assert first.returncode == 0, first.stdout[-4000:]
    assert f"Jupyter at http://127.0.0.1:{port}" in first.stdout
    assert (
        "STATUS keys=container_id,gpus,image_id,probe,seconds_to_healthy,started_at,token_file,url"
        in first.stdout
    )
    assert "torch=2.14.1" in first.stdout
    token = (home / "token").read_text().strip()
    assert token not in first.stdout + first.stderr
    assert (home / "workload" / "requirements.lock").is_file()
    assert (home / "outputs").stat().st_uid == 1000
    container = docker_client.containers.get(f"{PREFIX}role")
    assert notebook_image in container.image.tags

    second = run()
    assert second.returncode == 0, second.stdout[-4000:]
    assert recap(second.stdout)["changed"] == 0, second.stdout[-4000:]

    gone = run("-e", "notebook_state=absent")
    assert gone.returncode == 0, gone.stdout[-4000:]
    assert not [c for c in docker_client.containers.list(all=True) if c.name == f"{PREFIX}role"]


def test_role_rejects_a_bad_setting_before_any_change(role_run) -> None:
    run, home, _ = role_run
    failed = run("-e", "notebook_expect_gpu=maybe")
    assert failed.returncode != 0
    assert "notebook_expect_gpu=maybe (auto, true or false)" in failed.stdout
    assert not home.exists()
