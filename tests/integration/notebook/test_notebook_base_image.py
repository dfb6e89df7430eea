"""The notebook role's choice of base image, on this machine, which no registry answers.

An offline host must not see a failed pull (a red `[ERROR] ... Error pulling image ...
...ignoring`) before the fallback: the role asks the Docker daemon whether the registry
answers first, and says in one line which base it uses and why.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.playbook import PlaybookRun, run_playbook

PLAYBOOK = """\
---
- name: Choose the notebook's base image with the role's own tasks
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Choose the base image
      ansible.builtin.include_role:
        name: wyvern.workbench.notebook
        tasks_from: base_image.yml
"""
# What a failed-then-ignored pull prints; none of it may reach an offline user.
ALARMS = ("[ERROR]", "Error pulling", "...ignoring", "fatal:", "FAILED!")


@pytest.fixture
def choose_base(repo_root: Path, ansible_env: dict[str, str], tmp_path: Path):
    playbook = tmp_path / "base.yml"
    playbook.write_text(PLAYBOOK)

    def run(check: bool = False, **extra: object) -> PlaybookRun:
        return run_playbook(repo_root, str(playbook), ansible_env, extra, check=check, timeout=300)

    return run


def base_line(run: PlaybookRun) -> str:
    """The message, as one line (the YAML callback wraps long ones on screen)."""
    flat = " ".join(run.output.split())
    match = re.search(r"msg: (['\"])(Base image: .*?)\1 (?:TASK|PLAY)", flat)
    assert match, run.tail()
    return match[2]


def test_offline_host_uses_the_debootstrap_base_quietly(choose_base, debian_base_image) -> None:
    run = choose_base(notebook_bootstrap_image=debian_base_image)
    assert run.rc == 0, run.tail()
    for alarm in ALARMS:
        assert alarm not in run.output, run.tail()
    line = base_line(run)
    assert line.startswith(
        f"Base image: {debian_base_image} (Debian, made here with debootstrap, already built): "
        "the registry of python does not answer ("
    ), line
    assert "Pull the base image" not in run.output.split("PLAY RECAP")[0].split("skipping")[0]
    assert run.changed == 0, run.tail()

    # A dry run decides the same way, from the same question.
    dry = choose_base(check=True, notebook_bootstrap_image=debian_base_image)
    assert dry.rc == 0, dry.tail()
    assert base_line(dry) == line
    for alarm in ALARMS:
        assert alarm not in dry.output, dry.tail()


def test_a_base_on_the_host_is_used_without_asking_the_registry(
    choose_base, debian_base_image
) -> None:
    run = choose_base(
        notebook_base_image=debian_base_image, notebook_bootstrap_image="wyvern-test-unused:none"
    )
    assert run.rc == 0, run.tail()
    assert base_line(run) == f"Base image: {debian_base_image}: it is on this host already"
    assert re.search(r"Ask the Docker daemon [^\n]*\n\s*skipping:", run.output), run.tail()


def test_no_fallback_and_no_registry_fails_naming_the_variable(choose_base) -> None:
    run = choose_base(notebook_base_bootstrap="never")
    assert run.rc != 0
    flat = " ".join(run.output.split())
    assert "its registry does not answer" in flat, run.tail()
    assert "notebook_base_bootstrap is `never`" in flat, run.tail()
    assert "set notebook_base_bootstrap to `auto`" in flat, run.tail()
    assert "Pull the base image" not in flat.split("fatal:")[0].split("Fail when")[-1]
