"""notebook_sync as a task on the local connection: no workspace, no sync; a first sync
starts the project's notebooks folder from the seed, once."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.playbook import run_playbook

PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Sync
      wyvern.workbench.notebook_sync:
        src: "{{ base }}/project/notebooks"
        dest: "{{ base }}/host/workspace/notebooks"
        requires: "{{ base }}/host/workspace"
        seed: "{{ base }}/example"
        state_file: "{{ base }}/state.json"
        id_file: "{{ base }}/host/sync-id"
      register: synced
    - name: Keep the result
      ansible.builtin.copy:
        content: "{{ synced | to_json }}"
        dest: "{{ base }}/result.json"
        mode: "0644"
"""


def test_no_workspace_no_sync_and_a_first_sync_seeds_the_project_once(
    repo_root: Path, ansible_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "play.yml").write_text(PLAY)
    (tmp_path / "example").mkdir()
    (tmp_path / "example" / "example.ipynb").write_text('{"cells": []}')

    def sync() -> dict:
        run = run_playbook(
            repo_root, str(tmp_path / "play.yml"), ansible_env, {"base": str(tmp_path)}
        )
        assert run.rc == 0, run.tail()
        return json.loads((tmp_path / "result.json").read_text())

    # A workbench that never ran (or is gone): skipped, nothing made on either side.
    result = sync()
    assert result.get("skipped") is True, result
    assert not (tmp_path / "project").exists()
    assert not (tmp_path / "host").exists()
    assert not (tmp_path / "state.json").exists()

    # With its workspace: the project folder starts as a copy of the example and goes out.
    (tmp_path / "host" / "workspace").mkdir(parents=True)
    result = sync()
    assert result["seeded"] is True and result["pushed"] == ["example.ipynb"], result
    assert (tmp_path / "project" / "notebooks" / "example.ipynb").read_text() == '{"cells": []}'
    assert (tmp_path / "host" / "workspace" / "notebooks" / "example.ipynb").exists()

    # A folder the user emptied stays empty: the deletion goes out, the seed never returns.
    (tmp_path / "project" / "notebooks" / "example.ipynb").unlink()
    result = sync()
    assert result["seeded"] is False, result
    assert list((tmp_path / "project" / "notebooks").iterdir()) == []
    assert not (tmp_path / "host" / "workspace" / "notebooks" / "example.ipynb").exists()
