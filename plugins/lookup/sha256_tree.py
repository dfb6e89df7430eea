# Copyright: Wyvern workbench team
# Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
name: sha256_tree
short_description: Every regular file under a folder of the control node, with its SHA-256
version_added: 0.4.0
description:
  - Walks each folder given (on the control node, without following symbolic links) and returns one
    C([relative path, sha256]) pair per regular file, sorted by path. Hidden files count; symbolic
    links, sockets and other special files do not.
  - Names matching one of O(excludes) (shell patterns against the file's name) are left out.
  - Runs inside ansible-playbook, so a no-op run pays no module start for it (the notebook role's
    image tag used to cost an M(ansible.builtin.find) run on localhost, BENCHMARKS.md).
author:
  - Wyvern workbench team (@wyvern-workbench)
options:
  _terms:
    description: The folders to walk; each one's pairs are relative to it.
    required: true
    type: list
    elements: path
  excludes:
    description: Shell patterns; a file whose name matches one is left out.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Hash what the image build copies
  ansible.builtin.set_fact:
    inputs: "{{ query('wyvern.workbench.sha256_tree', 'workload', excludes=['*.pyc']) }}"
"""

RETURN = r"""
_raw:
  description: One C([relative path, sha256 hex]) pair per file, sorted by path.
  type: list
  elements: list
"""

import fnmatch
import os
import stat
from collections.abc import Iterable

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase
from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_sync import sha256_file


def sha256_tree(root: str, excludes: Iterable[str] = ()) -> list[list[str]]:
    """`[relative path, sha256]` of every regular file under `root`, sorted by path."""
    patterns = list(excludes)
    if not os.path.isdir(root):
        raise AnsibleLookupError(f"sha256_tree: {root} is not a folder on the control node")
    pairs: list[list[str]] = []
    for folder, dirs, files in os.walk(root, onerror=_raise):
        dirs.sort()
        for name in files:
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
                continue
            path = os.path.join(folder, name)
            if not stat.S_ISREG(os.lstat(path).st_mode):
                continue
            try:
                digest = sha256_file(path)
            except OSError as error:
                raise AnsibleLookupError(
                    f"sha256_tree: cannot read {path}: {error.strerror}"
                ) from error
            pairs.append([os.path.relpath(path, root), digest])
    return sorted(pairs)


def _raise(error: OSError) -> None:
    raise AnsibleLookupError(f"sha256_tree: cannot read {error.filename}: {error.strerror}")


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        excludes = kwargs.pop("excludes", None) or []
        if kwargs:
            raise AnsibleLookupError(
                f"sha256_tree: unknown option(s) {', '.join(sorted(kwargs))}; it takes excludes"
            )
        if isinstance(excludes, str):
            excludes = [excludes]
        result: list[list[str]] = []
        for term in terms:
            result.extend(sha256_tree(str(term), excludes))
        return result
