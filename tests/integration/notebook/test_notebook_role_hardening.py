"""The notebook role's own tasks (issue 11): status.yml never prints a container's inspect
data, and a public bind or a bad port fails before anything changes."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from pathlib import Path

import docker

from .conftest import PREFIX

STATUS_PLAYBOOK = """\
- name: Read the notebook's status as run.yml and teardown.yml do
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Find the running notebook
      ansible.builtin.include_role:
        name: wyvern.workbench.notebook
        tasks_from: status.yml
        public: true
    - name: Show the image it runs
      ansible.builtin.debug:
        msg: "RUNNING {{ notebook_running_image_id }}"
"""

ROLE_PLAYBOOK = """\
- name: Run the notebook role
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  roles:
    - role: wyvern.workbench.notebook
"""


def play(repo_root: Path, env: dict[str, str], text: str, tmp_path: Path, *extra: str):
    playbook = tmp_path / "play.yml"
    playbook.write_text(text)
    return subprocess.run(
        ["ansible-playbook", "-vvv", str(playbook), *extra],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_status_never_prints_the_container_inspect_data(
    repo_root: Path,
    ansible_env: dict[str, str],
    docker_client,
    debian_base_image: str,
    tmp_path: Path,
) -> None:
    # A container as earlier versions made them: the token in its environment.
    name = f"{PREFIX}status-{secrets.token_hex(3)}"
    token = f"wyvern-status-token-{secrets.token_hex(12)}"
    container = docker_client.containers.run(
        debian_base_image,
        ["sleep", "300"],
        name=name,
        environment={"JUPYTER_TOKEN": token},
        detach=True,
    )
    try:
        shown = play(
            repo_root, ansible_env, STATUS_PLAYBOOK, tmp_path, "-e", f"notebook_name={name}"
        )
        assert shown.returncode == 0, shown.stdout[-3000:]
        assert f"RUNNING {container.image.id}" in shown.stdout
        assert token not in shown.stdout + shown.stderr
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)

    missing = play(repo_root, ansible_env, STATUS_PLAYBOOK, tmp_path, "-e", f"notebook_name={name}")
    assert missing.returncode != 0
    assert f"No running notebook container `{name}`" in missing.stdout


def test_a_public_bind_without_the_opt_in_fails_before_any_change(
    repo_root: Path, ansible_env: dict[str, str], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    failed = play(
        repo_root,
        ansible_env,
        ROLE_PLAYBOOK,
        tmp_path,
        "-e",
        f"notebook_home={home}",
        "-e",
        "notebook_bind_address=0.0.0.0",
    )
    assert failed.returncode != 0
    assert "notebook_bind_address=0.0.0.0 would publish Jupyter beyond this host" in failed.stdout
    assert "notebook_allow_public_bind=true" in failed.stdout
    assert not home.exists()


def test_a_bad_port_fails_before_any_change(
    repo_root: Path, ansible_env: dict[str, str], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    failed = play(
        repo_root,
        ansible_env,
        ROLE_PLAYBOOK,
        tmp_path,
        "-e",
        f"notebook_home={home}",
        "-e",
        "notebook_port=70000",
    )
    assert failed.returncode != 0
    assert "notebook_port=70000 is not a TCP port" in failed.stdout
    assert not home.exists()
