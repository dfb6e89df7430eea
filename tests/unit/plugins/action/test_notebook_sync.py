"""The sync state is trusted only for the very pair of folders it was written for."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible.errors import AnsibleActionFail
from ansible_collections.wyvern.workbench.plugins.action.notebook_sync import (
    STATE_VERSION,
    base_for,
    load_state,
    write_state,
)

STATE = {
    "version": STATE_VERSION,
    "local_dir": "/home/me/project/notebooks",
    "remote_dir": "/var/lib/wyvern/wb/workspace/notebooks",
    "remote_id": "id-1",
    "files": {"x.ipynb": "a" * 64},
}


def test_the_state_of_the_same_two_folders_is_the_base() -> None:
    assert base_for(STATE, STATE["local_dir"], STATE["remote_dir"], "id-1") == STATE["files"]


@pytest.mark.parametrize(
    ("local_dir", "remote_dir", "remote_id"),
    [
        # A new workbench (torn down and started again): its empty folder must not read as
        # "the user deleted everything there", which would delete the local notebooks.
        (STATE["local_dir"], STATE["remote_dir"], "id-2"),
        (STATE["local_dir"], STATE["remote_dir"], ""),
        # Another project folder must not read as "everything was deleted here".
        ("/home/me/other/notebooks", STATE["remote_dir"], "id-1"),
        (STATE["local_dir"], "/var/lib/wyvern/other/workspace/notebooks", "id-1"),
    ],
)
def test_another_pair_of_folders_has_no_base(
    local_dir: str, remote_dir: str, remote_id: str
) -> None:
    assert base_for(STATE, local_dir, remote_dir, remote_id) is None


def test_state_round_trips_and_a_missing_one_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "notebooks-sync.json"
    assert load_state(str(path)) == {}
    write_state(str(path), STATE)
    assert load_state(str(path)) == STATE
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_a_broken_state_fails_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "notebooks-sync.json"
    path.write_text("{not json")
    with pytest.raises(AnsibleActionFail, match="move it aside"):
        load_state(str(path))
