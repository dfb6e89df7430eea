#!/usr/bin/python
# Copyright: Wyvern workbench team
# Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: notebook_sync
short_description: Sync a notebooks folder both ways between the control node and the workbench
version_added: 0.3.0
description:
  - Three-way sync by SHA-256 between O(src) on the control node and O(dest) on the workbench,
    against what both held after the last sync (O(state_file), on the control node).
  - Only changed files move. A file changed on one side goes to the other; a file deleted on
    one side is deleted on the other only when that side did not change it (otherwise it is
    restored and reported).
  - A file changed on both sides is never overwritten. The control node's version keeps the
    name and the workbench's is kept beside it as C(<name>.remote-conflict-<UTC stamp><ext>)
    on both sides; the result and a warning name the conflict, and the user merges.
  - With no state for this pair of folders (first sync, a new workbench, another folder),
    nothing is deleted, equal files are in sync, one-sided files are copied and differing
    files are conflicts.
  - Runs as an action plugin on the control node; the workbench is listed by
    M(wyvern.workbench.notebook_files), files move through the copy, fetch and file actions.
author:
  - Wyvern workbench team (@wyvern-workbench)
attributes:
  check_mode:
    support: full
    description: Plans and reports what would move; moves nothing and keeps the state.
  diff_mode:
    support: none
    description: Returns no diff.
  idempotent:
    support: full
    description: A second sync with no edits moves nothing and reports no change.
options:
  src:
    description: The project's notebooks folder on the control node; made when missing.
    type: path
    required: true
  dest:
    description: The folder on the workbench (an absolute path); made when missing.
    type: path
    required: true
  state_file:
    description: What was in sync after the last sync (JSON on the control node).
    type: path
    required: true
  id_file:
    description: On the workbench, the identity of O(dest), so a fresh workbench is never
      mistaken for one whose files were deleted.
    type: path
    required: true
  owner:
    description: Owner of the files and folders written on the workbench (the notebook user).
    type: str
  group:
    description: Group of the files and folders written on the workbench.
    type: str
  mode:
    description: Mode of the files written on the workbench.
    type: str
    default: "0664"
  ignore:
    description: Glob patterns of names never synced (default Jupyter checkpoints, its trash and
      atomic-save files, caches, C(.git)).
    type: list
    elements: str
  strays_root:
    description: A folder on the workbench around O(dest); files saved there outside O(dest)
      and O(strays_prune) are fetched to O(strays_dest) and reported.
    type: path
  strays_prune:
    description: Names directly under O(strays_root) that are not looked into.
    type: list
    elements: str
    default: []
  strays_dest:
    description: Where on the control node the files from O(strays_root) are fetched.
    type: path
  requires:
    description: A folder on the workbench without which nothing is synced; the task is then
      skipped and the control node left alone (a workbench that never ran a notebook, or is gone).
      Asked in the same module run that lists O(dest).
    type: path
  seed:
    description: A folder on the control node whose copy starts O(src) when O(src) does not exist
      (a folder the user emptied stays empty). Copied only when the sync goes ahead.
    type: path
"""

EXAMPLES = r"""
- name: Sync the notebooks both ways
  wyvern.workbench.notebook_sync:
    src: "{{ playbook_dir }}/notebooks"
    dest: /var/lib/wyvern/workbench/workspace/notebooks
    state_file: "~/.local/state/wyvern/workbench/localhost/notebooks-sync.json"
    id_file: /var/lib/wyvern/workbench/notebooks-sync-id
    owner: "1000"
    group: "1000"
"""

RETURN = r"""
seeded:
  description: Whether O(src) was missing and started with a copy of O(seed).
  returned: when the sync went ahead
  type: bool
pushed:
  description: Files copied from the control node to the workbench.
  returned: always
  type: list
  elements: str
  sample: [transfer_learning.ipynb]
pulled:
  description: Files copied from the workbench to the control node.
  returned: always
  type: list
  elements: str
deleted_on_workbench:
  description: Files deleted on the workbench (deleted on the control node, unchanged there).
  returned: always
  type: list
  elements: str
deleted_on_control_node:
  description: Files deleted on the control node (deleted on the workbench, unchanged here).
  returned: always
  type: list
  elements: str
conflicts:
  description: Files changed on both sides, with the name the workbench's version is kept under.
  returned: always
  type: list
  elements: dict
  sample: [{"path": "x.ipynb", "copy": "x.remote-conflict-20261127-081500.ipynb"}]
deletions_not_propagated:
  description: Files deleted on one side but changed on the other, restored from that side.
  returned: always
  type: list
  elements: dict
strays:
  description: Files saved outside O(dest) under O(strays_root), fetched to O(strays_dest).
  returned: always
  type: list
  elements: str
summary:
  description: How many files each outcome had.
  returned: always
  type: dict
first_sync:
  description: Whether no state matched this pair of folders (nothing was deleted).
  returned: always
  type: bool
msg:
  description: One line per file that moved or needs the user, after a summary line.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_sync import (
    SYNC_ARGUMENT_SPEC,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=SYNC_ARGUMENT_SPEC,
        supports_check_mode=True,
    )
    module.fail_json(
        msg="wyvern.workbench.notebook_sync runs as an action plugin on the control node; "
        "call it as a task, not with a module runner"
    )


if __name__ == "__main__":
    main()
