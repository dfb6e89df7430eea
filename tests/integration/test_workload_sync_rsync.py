"""The notebook role's workload sync where rsync is missing: no rsync look-up on every
run; a failed sync installs rsync and syncs again (local connection, the real role tasks
and rsync, behind a shim that answers "command not found" the first time only, as a host
without rsync would before the role installs it)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.support.playbook import run_playbook

PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Sync the workload as the notebook role does
      ansible.builtin.include_role:
        name: wyvern.workbench.notebook
        tasks_from: sync.yml
"""

SHIM = """#!/bin/sh
if [ ! -e {seen} ]; then
  touch {seen}
  echo missing >> {calls}
  echo "sh: 1: rsync: not found" >&2
  exit 127
fi
echo real >> {calls}
exec /usr/bin/rsync "$@"
"""


def test_a_failed_first_sync_installs_rsync_and_syncs_again(
    repo_root: Path, ansible_env: dict[str, str], tmp_path: Path
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    seen, calls = tmp_path / "seen", tmp_path / "calls"
    (bindir / "rsync").write_text(SHIM.format(seen=seen, calls=calls))
    (bindir / "rsync").chmod(0o755)
    (tmp_path / "play.yml").write_text(PLAY)
    env = {**ansible_env, "PATH": f"{bindir}{os.pathsep}{ansible_env['PATH']}"}
    home = tmp_path / "home"
    extra = {"notebook_home": str(home), "workbench_name": "wb-rsync-test"}

    run = run_playbook(repo_root, str(tmp_path / "play.yml"), env, extra)
    assert run.rc == 0, run.tail()
    assert calls.read_text().split() == ["missing", "real"]
    assert "TASK [wyvern.workbench.notebook : Install rsync for the workload sync]" in run.output
    assert (home / "workload" / "pyproject.toml").read_bytes() == (
        repo_root / "workload" / "pyproject.toml"
    ).read_bytes()

    # With rsync there: one sync, nothing looked up or installed, nothing changed.
    calls.unlink()
    run = run_playbook(repo_root, str(tmp_path / "play.yml"), env, extra)
    assert run.rc == 0, run.tail()
    assert calls.read_text().split() == ["real"]
    assert re.search(r"Install rsync for the workload sync\] \**\nskipping", run.output), run.tail()
    assert run.changed == 0, run.tail()
