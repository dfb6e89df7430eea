"""The notebook role on localhost: sync, reuse the built image, start, report, changed=0 on rerun."""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import docker
import pytest

from tests.support.playbook import run_playbook
from tests.support.ports import reserved_port

from .conftest import PREFIX, remove_container

IMAGE_PLAYBOOK = (
    Path(__file__).resolve().parents[2] / "support" / "playbooks" / "notebook_image.yml"
)

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
      when: notebook_state == 'started' and not ansible_check_mode
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
    name = f"{PREFIX}role-{secrets.token_hex(3)}"
    remove_container(docker_client, name)
    with reserved_port() as port:
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
            name,
        )
    remove_container(docker_client, name)


def test_role_starts_the_notebook_and_is_idempotent(
    role_run, notebook_image: str, docker_client
) -> None:
    run, home, port, name = role_run
    # A dry run on a fresh host plans without failing and creates nothing.
    plan = run("--check")
    assert plan.returncode == 0, plan.stdout[-4000:]
    assert not home.exists()
    assert name not in {c.name for c in docker_client.containers.list(all=True)}

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
    container = docker_client.containers.get(name)
    assert notebook_image in container.image.tags

    dry = run("--check")
    assert dry.returncode == 0, dry.stdout[-4000:]
    assert recap(dry.stdout)["changed"] == 0, dry.stdout[-4000:]
    second = run()
    assert second.returncode == 0, second.stdout[-4000:]
    assert recap(second.stdout)["changed"] == 0, second.stdout[-4000:]
    assert docker_client.containers.get(name).id == container.id

    gone = run("-e", "notebook_state=absent")
    assert gone.returncode == 0, gone.stdout[-4000:]
    assert not [c for c in docker_client.containers.list(all=True) if c.name == name]


def test_role_rejects_a_bad_setting_before_any_change(role_run) -> None:
    run, home, _, _ = role_run
    failed = run("-e", "notebook_expect_gpu=maybe")
    assert failed.returncode != 0
    # meta/argument_specs.yml is where the choices live (the same as the module's).
    assert "notebook_expect_gpu must be one of: auto, true, false, got: maybe" in failed.stdout
    assert not home.exists()


def test_image_is_rebuilt_exactly_when_its_content_changes(
    repo_root: Path,
    ansible_env: dict[str, str],
    docker_client,
    notebook_image: str,
    tmp_path: Path,
) -> None:
    """The image tag hashes what the build copies: a touched file is the same image, an
    edited package file is a new tag that the role builds."""
    workload = tmp_path / "workload"
    shutil.copytree(
        repo_root / "workload",
        workload,
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", ".ipynb_checkpoints"),
    )
    out = tmp_path / "image"

    def build() -> tuple[str, bool]:
        result = run_playbook(
            repo_root,
            str(IMAGE_PLAYBOOK),
            ansible_env,
            {
                "notebook_home": str(tmp_path / "home"),
                "notebook_workload_src": str(workload),
                "notebook_image_out": str(out),
            },
            timeout=1500,
        )
        assert result.rc == 0, result.tail(80)
        built = "TASK [wyvern.workbench.notebook : Build the notebook image]" in result.output
        return out.read_text().strip(), built

    same, built = build()
    assert (same, built) == (notebook_image, False)

    package = workload / "transfer_learning" / "__init__.py"
    package.touch()
    assert build() == (notebook_image, False)

    package.write_text(package.read_text() + "\n# a change to the package\n")
    new, built = build()
    try:
        assert new != notebook_image and built
        assert new.split(":")[0] == notebook_image.split(":")[0]
        source = docker_client.containers.run(
            new,
            [
                "python",
                "-c",
                "import inspect, transfer_learning; print(inspect.getsource(transfer_learning))",
            ],
            remove=True,
        ).decode()
        assert "# a change to the package" in source
        assert build() == (new, False)  # and once built, it is reused
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
            docker_client.images.remove(new, force=True)


def test_dry_run_on_a_host_without_the_image_plans_without_failing(role_run, docker_client) -> None:
    """A fresh machine has neither the synced workload nor the image: --check plans the
    sync, the build and the start, changes nothing, and does not fail."""
    run, home, _, name = role_run
    tag = f"dry-run-{secrets.token_hex(4)}"  # an image that is not on this host
    plan = run("--check", "-e", f"notebook_image_tag={tag}")
    assert plan.returncode == 0, plan.stdout[-4000:]
    assert recap(plan.stdout)["changed"] > 0, plan.stdout[-4000:]
    assert not home.exists()
    assert not docker_client.images.list(name=f"wyvern/notebook:{tag}")
    assert name not in {c.name for c in docker_client.containers.list(all=True)}
