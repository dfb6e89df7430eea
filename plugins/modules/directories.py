#!/usr/bin/python
# Copyright: Wyvern workbench team
# Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: directories
short_description: Make several folders with their owner, group and mode in one call
version_added: 0.3.0
description:
  - For each entry of O(paths), in order, creates the folder when it is missing and sets its owner,
    group and mode like M(ansible.builtin.file) with C(state=directory) does.
  - One module run instead of one per folder (a loop of M(ansible.builtin.file) costs a Python start
    on the host per item; on a no-op rerun of site.yml that was seconds, see BENCHMARKS.md).
  - List a parent before its children; a missing parent that is not listed is made with the default mode.
author:
  - Wyvern workbench team (@wyvern-workbench)
attributes:
  check_mode:
    support: full
    description: Reports what would be created or changed, and changes nothing.
  diff_mode:
    support: full
    description: The owner, group and mode before and after, per folder (as M(ansible.builtin.file)).
  idempotent:
    support: full
    description: A second run with the same folders changes nothing.
options:
  paths:
    description: The folders, parents first.
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: The folder.
        type: path
        required: true
      owner:
        description: Owner (name or uid); unchanged when omitted.
        type: str
      group:
        description: Group (name or gid); unchanged when omitted.
        type: str
      mode:
        description: Mode, an octal string such as V(0755); unchanged when omitted.
        type: raw
"""

EXAMPLES = r"""
- name: Create the notebook directories
  wyvern.workbench.directories:
    paths:
      - {path: /var/lib/wyvern/workbench, owner: "0", group: "0", mode: "0755"}
      - {path: /var/lib/wyvern/workbench/outputs, owner: "1000", group: "1000", mode: "0775"}
"""

RETURN = r"""
created:
  description: The folders that were missing (and were made, unless in check mode).
  returned: always
  type: list
  elements: str
changed_paths:
  description: The folders created or whose owner, group or mode changed.
  returned: always
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC = dict(
    paths=dict(
        type="list",
        elements="dict",
        required=True,
        options=dict(
            path=dict(type="path", required=True),
            owner=dict(type="str"),
            group=dict(type="str"),
            mode=dict(type="raw"),
        ),
    ),
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    created: list[str] = []
    changed_paths: list[str] = []
    diffs: list[dict[str, dict[str, str]]] = []
    for item in module.params["paths"]:
        path = item["path"]
        if os.path.lexists(path) and not os.path.isdir(path):
            module.fail_json(
                msg=f"{path} exists and is not a folder; move it away, or choose another path",
                created=created,
                changed_paths=changed_paths,
            )
        if not os.path.exists(path):
            created.append(path)
            changed_paths.append(path)
            if module.check_mode:
                continue  # nothing to compare against yet
            try:
                os.makedirs(path)
            except OSError as exc:
                module.fail_json(msg=f"cannot create {path}: {exc}", created=created)
        file_args = module.load_file_common_arguments(
            {"path": path, "mode": item["mode"], "owner": item["owner"], "group": item["group"]}
        )
        diff: dict[str, dict[str, str]] = {"before": {"path": path}, "after": {"path": path}}
        if module.set_fs_attributes_if_different(file_args, False, diff) and (
            path not in changed_paths
        ):
            changed_paths.append(path)
        diffs.append(diff)
    module.exit_json(
        changed=bool(changed_paths),
        created=created,
        changed_paths=changed_paths,
        diff=diffs,
    )


if __name__ == "__main__":
    main()
