# Copyright: Wyvern workbench team
# Apache-2.0
"""Two-way notebook sync: the pure planner and the folder scan.

The planner compares three maps of relative path -> SHA-256: the control node's folder
(``local``), the workbench's folder (``remote``) and what both held after the last sync
(``base``, kept on the control node). It decides per file, and never overwrites a file
that changed on both sides: the workbench's version is kept beside it under a
``.remote-conflict-<stamp>`` name on both sides, and the conflict is reported.

Both the module (on the workbench) and the action plugin (on the control node) import
this file, so it depends on the standard library only.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# The options of wyvern.workbench.notebook_sync, declared once: the action validates its
# arguments with them and the module (its documentation stub) declares them from here.
SYNC_ARGUMENT_SPEC: dict = {
    "src": {"type": "path", "required": True},
    "dest": {"type": "path", "required": True},
    "state_file": {"type": "path", "required": True},
    "id_file": {"type": "path", "required": True},
    "owner": {"type": "str"},
    "group": {"type": "str"},
    "mode": {"type": "str", "default": "0664"},
    "ignore": {"type": "list", "elements": "str"},
    "strays_root": {"type": "path"},
    "strays_prune": {"type": "list", "elements": "str", "default": []},
    "strays_dest": {"type": "path"},
    "requires": {"type": "path"},
    "seed": {"type": "path"},
}


# Jupyter's own files (checkpoints, atomic-save temporaries, the trash), caches and VCS
# folders: never synced, never reported as strays.
DEFAULT_IGNORE = (
    ".ipynb_checkpoints",
    ".virtual_documents",
    ".Trash-*",
    ".~*",
    "__pycache__",
    "*.pyc",
    ".DS_Store",
    ".git",
)
CONFLICT_MARK = ".remote-conflict-"
CHUNK = 1 << 20


def is_ignored(relpath: str, patterns: Iterable[str] = DEFAULT_IGNORE) -> bool:
    """True when any component of ``relpath`` matches one of the glob ``patterns``."""
    parts = relpath.split("/")
    return any(fnmatch.fnmatchcase(part, pattern) for part in parts for pattern in patterns)


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def scan(
    root: str, ignore: Iterable[str] = DEFAULT_IGNORE, prune: Iterable[str] = ()
) -> dict[str, str]:
    """Relative path -> SHA-256 of every regular file under ``root``.

    Ignored names and the top-level folders in ``prune`` are not entered; symbolic links
    are not followed (a link could point anywhere on the host). A missing root is empty.
    """
    ignore = tuple(ignore)
    pruned = set(prune)
    files: dict[str, str] = {}
    if not os.path.isdir(root):
        return files
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        dirnames[:] = sorted(
            name
            for name in dirnames
            if not is_ignored(name, ignore)
            and not (rel_dir == "" and name in pruned)
            and not os.path.islink(os.path.join(dirpath, name))
        )
        for name in sorted(filenames):
            if is_ignored(name, ignore) or (rel_dir == "" and name in pruned):
                continue
            full = os.path.join(dirpath, name)
            try:
                mode = os.lstat(full).st_mode
            except FileNotFoundError:  # removed while we walked
                continue
            if not stat.S_ISREG(mode):
                continue
            rel = f"{rel_dir}/{name}" if rel_dir else name
            try:
                files[rel] = sha256_file(full)
            except FileNotFoundError:
                continue
    return files


def conflict_name(relpath: str, stamp: str, taken: Iterable[str] = ()) -> str:
    """``dir/x.ipynb`` -> ``dir/x.remote-conflict-<stamp>.ipynb``, unique among ``taken``."""
    head, _, base = relpath.rpartition("/")
    stem, ext = os.path.splitext(base)
    if not stem:  # a dot file such as `.env`
        stem, ext = base, ""
    taken = set(taken)
    number = 1
    while True:
        suffix = f"{CONFLICT_MARK}{stamp}" + (f"-{number}" if number > 1 else "")
        name = f"{stem}{suffix}{ext}"
        candidate = f"{head}/{name}" if head else name
        if candidate not in taken:
            return candidate
        number += 1


@dataclass(frozen=True)
class Conflict:
    """``path`` changed on both sides: the control node's version keeps the name, the
    workbench's is kept as ``copy`` on both sides."""

    path: str
    copy: str


@dataclass(frozen=True)
class Kept:
    """A deletion that was not propagated, because the other side changed the file."""

    path: str
    deleted_on: str  # "control node" or "workbench"


@dataclass
class Plan:
    push: list[str] = field(default_factory=list)  # control node -> workbench
    pull: list[str] = field(default_factory=list)  # workbench -> control node
    delete_local: list[str] = field(default_factory=list)
    delete_remote: list[str] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    kept: list[Kept] = field(default_factory=list)
    in_sync: list[str] = field(default_factory=list)
    # What both sides hold once the plan is carried out: the next sync's base.
    state: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(
            self.push or self.pull or self.delete_local or self.delete_remote or self.conflicts
        )

    def summary(self) -> dict[str, int]:
        return {
            "pushed": len(self.push),
            "pulled": len(self.pull),
            "deleted_on_control_node": len(self.delete_local),
            "deleted_on_workbench": len(self.delete_remote),
            "conflicts": len(self.conflicts),
            "deletions_not_propagated": len(self.kept),
            "in_sync": len(self.in_sync),
        }


def plan_sync(
    local: Mapping[str, str],
    remote: Mapping[str, str],
    base: Mapping[str, str] | None,
    stamp: str,
    ignore: Iterable[str] = DEFAULT_IGNORE,
) -> Plan:
    """Decide what moves, file by file, from the two sides' hashes and the last sync's.

    A file equal on both sides is in sync. Otherwise a side "changed" the file when its
    hash differs from ``base`` (absent counts as a hash of its own), and:
    only one side changed -> that side's version (or deletion) goes to the other;
    a side deleted it and the other changed it -> the changed file is restored (reported);
    both changed (or no base and they differ) -> conflict, nothing is lost.
    """
    ignore = tuple(ignore)
    base = base or {}
    plan = Plan()
    taken = set(local) | set(remote)
    for path in sorted(taken | set(base)):
        if is_ignored(path, ignore):
            continue
        here, there, was = local.get(path), remote.get(path), base.get(path)
        if here == there:
            if here is not None:
                plan.in_sync.append(path)
                plan.state[path] = here
            continue
        local_changed, remote_changed = here != was, there != was
        if not remote_changed:  # only the control node changed it
            if here is None:
                plan.delete_remote.append(path)
            else:
                plan.push.append(path)
                plan.state[path] = here
        elif not local_changed:  # only the workbench changed it
            if there is None:
                plan.delete_local.append(path)
            else:
                plan.pull.append(path)
                plan.state[path] = there
        elif here is None:  # deleted here, changed there: keep the workbench's
            plan.pull.append(path)
            plan.kept.append(Kept(path, "control node"))
            plan.state[path] = there  # type: ignore[assignment]
        elif there is None:  # deleted there, changed here: keep the control node's
            plan.push.append(path)
            plan.kept.append(Kept(path, "workbench"))
            plan.state[path] = here
        else:
            copy = conflict_name(path, stamp, taken)
            taken.add(copy)
            plan.conflicts.append(Conflict(path, copy))
            plan.state[path] = here
            plan.state[copy] = there
    return plan


def plan_strays(remote: Mapping[str, str], fetched: Mapping[str, str]) -> list[str]:
    """Files saved outside the synced folder that the control node lacks or holds older."""
    return sorted(path for path, digest in remote.items() if fetched.get(path) != digest)
