#!/usr/bin/python
# Copyright: Wyvern workbench team
# Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: notebook_files
short_description: List a folder's files by SHA-256, the workbench side of the notebook sync
version_added: 0.3.0
description:
  - Walks O(path) and returns every regular file's SHA-256, skipping the O(ignore) names
    (Jupyter checkpoints, caches) and symbolic links.
  - With O(strays_root), also lists the files saved under that folder but outside O(path)
    and the O(strays_prune) folders (work the sync would otherwise not carry home).
  - Keeps the folder's sync identity in O(id_file) (a random id made on first use), so the
    control node can tell a fresh workbench from the one it last synced with.
  - Called by the M(wyvern.workbench.notebook_sync) action; rarely useful alone.
author:
  - Wyvern workbench team (@wyvern-workbench)
attributes:
  check_mode:
    support: full
    description: In check mode the folder and the id file are not created.
  diff_mode:
    support: none
    description: Returns no diff.
  idempotent:
    support: full
    description: Creates the folder and the id file once; reads otherwise.
options:
  path:
    description: The folder to list.
    type: path
    required: true
  id_file:
    description: Holds the folder's sync identity; made when missing.
    type: path
    required: true
  create:
    description: Make O(path) (owned by O(owner)/O(group), mode 0775) when it is missing.
    type: bool
    default: true
  owner:
    description: Owner of a folder this module makes.
    type: str
  group:
    description: Group of a folder this module makes.
    type: str
  ignore:
    description: Glob patterns; a file or folder whose name matches one is skipped.
    type: list
    elements: str
  strays_root:
    description: A folder around O(path) whose other files are listed as strays.
    type: path
  strays_prune:
    description: Names directly under O(strays_root) that are not entered.
    type: list
    elements: str
    default: []
  requires:
    description: A folder that must exist for anything to happen; when it does not, nothing is
      made or listed and RV(missing) names it.
    type: path
"""

EXAMPLES = r"""
- name: List the workbench's notebooks
  wyvern.workbench.notebook_files:
    path: /var/lib/wyvern/workbench/workspace/notebooks
    id_file: /var/lib/wyvern/workbench/notebooks-sync-id
  register: notebooks
"""

RETURN = r"""
files:
  description: Relative path to SHA-256 of every file under O(path).
  returned: always
  type: dict
  sample: {"transfer_learning.ipynb": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}
strays:
  description: Relative path (to O(strays_root)) to SHA-256 of the files outside O(path).
  returned: always
  type: dict
  sample: {"Untitled.ipynb": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}
sync_id:
  description: The folder's sync identity (empty in check mode before the first real run).
  returned: always
  type: str
  sample: 6f1c2a7e0d9b4c3f8e5a1b2c3d4e5f60
missing:
  description: O(requires), when that folder does not exist (then nothing else was done).
  returned: when O(requires) is missing
  type: str
  sample: /var/lib/wyvern/workbench/workspace
"""

import os
import uuid

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_sync import (
    DEFAULT_IGNORE,
    scan,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "id_file": {"type": "path", "required": True},
            "create": {"type": "bool", "default": True},
            "owner": {"type": "str"},
            "group": {"type": "str"},
            "ignore": {"type": "list", "elements": "str"},
            "strays_root": {"type": "path"},
            "strays_prune": {"type": "list", "elements": "str", "default": []},
            "requires": {"type": "path"},
        },
        supports_check_mode=True,
    )
    params = module.params
    if params["requires"] and not os.path.isdir(params["requires"]):
        module.exit_json(changed=False, missing=params["requires"], files={}, strays={}, sync_id="")
    path = params["path"]
    ignore = params["ignore"] if params["ignore"] is not None else list(DEFAULT_IGNORE)
    changed = False
    if params["create"] and not os.path.isdir(path):
        changed = True
        if not module.check_mode:
            os.makedirs(path, mode=0o775, exist_ok=True)
            module.set_owner_if_different(path, params["owner"], False)
            module.set_group_if_different(path, params["group"], False)
            os.chmod(path, 0o775)

    sync_id = ""
    if os.path.isfile(params["id_file"]):
        with open(params["id_file"], encoding="utf-8") as handle:
            sync_id = handle.read().strip()
    if not sync_id:
        changed = True
        if not module.check_mode:
            sync_id = uuid.uuid4().hex
            os.makedirs(os.path.dirname(params["id_file"]), exist_ok=True)
            with open(params["id_file"], "w", encoding="utf-8") as handle:
                handle.write(sync_id + "\n")
            os.chmod(params["id_file"], 0o644)

    strays: dict[str, str] = {}
    if params["strays_root"]:
        inside = os.path.relpath(path, params["strays_root"]).replace(os.sep, "/")
        prune = list(params["strays_prune"])
        if "/" not in inside:
            prune.append(inside)
        strays = {
            rel: digest
            for rel, digest in scan(params["strays_root"], ignore, prune).items()
            if not rel.startswith(inside + "/")
        }

    module.exit_json(changed=changed, files=scan(path, ignore), strays=strays, sync_id=sync_id)


if __name__ == "__main__":
    main()
