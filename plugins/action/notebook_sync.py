# Copyright: Wyvern workbench team
# Apache-2.0
"""Action plugin for wyvern.workbench.notebook_sync: the control node's side of the sync.

Lists the workbench's folder (module notebook_files) and the control node's, plans with
the pure planner (module_utils/_notebook_sync.py) against the last sync's state, then
moves only what changed through the copy, fetch and file actions, so become, SSH and
check mode behave exactly as they do for those.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_sync import (
    DEFAULT_IGNORE,
    SYNC_ARGUMENT_SPEC,
    Plan,
    plan_strays,
    plan_sync,
    scan,
)

STATE_VERSION = 1

ARGUMENT_SPEC: dict[str, Any] = SYNC_ARGUMENT_SPEC


def load_state(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise AnsibleActionFail(
            f"cannot read the sync state {path}: {exc}; move it aside to sync as a first time "
            "(nothing is deleted then, differing files become conflicts)"
        ) from exc
    return state if isinstance(state, dict) else {}


def write_state(path: str, state: dict[str, Any]) -> None:
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".notebooks-sync-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(state, handle, indent=1, sort_keys=True)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def base_for(state: dict[str, Any], local_dir: str, remote_dir: str, remote_id: str) -> Any:
    """The last sync's files, only where it was between these very two folders.

    A fresh workbench (new id) or another project folder means no base: a first sync,
    which copies and reports conflicts but never deletes.
    """
    if (
        state.get("version") == STATE_VERSION
        and remote_id
        and state.get("remote_id") == remote_id
        and state.get("local_dir") == local_dir
        and state.get("remote_dir") == remote_dir
    ):
        return state.get("files") or {}
    return None


def describe(plan: Plan, strays: list[str], strays_dest: str | None) -> list[str]:
    lines = [
        "notebooks: "
        + ", ".join(f"{count} {what.replace('_', ' ')}" for what, count in plan.summary().items())
    ]
    lines += [f"pushed to the workbench: {path}" for path in plan.push]
    lines += [f"pulled to the control node: {path}" for path in plan.pull]
    lines += [f"deleted on the workbench: {path}" for path in plan.delete_remote]
    lines += [f"deleted on the control node: {path}" for path in plan.delete_local]
    lines += [
        f"CONFLICT {c.path}: changed on both sides; the control node's version keeps the name, "
        f"the workbench's is kept as {c.copy} on both sides. Merge them and delete the copy."
        for c in plan.conflicts
    ]
    lines += [
        f"KEPT {k.path}: deleted on the {k.deleted_on} but changed on the other side; restored"
        for k in plan.kept
    ]
    lines += [
        f"SAVED OUTSIDE notebooks/: {path} fetched to {strays_dest}/{path}; "
        "move it into notebooks/ to have it synced"
        for path in strays
    ]
    return lines


def seed_folder(seed: str, dest: str) -> None:
    """Start `dest` (missing) with a copy of the folder `seed`: folders 0755, files 0644."""
    if not os.path.isdir(seed):
        raise AnsibleActionFail(f"seed {seed} is not a folder on the control node")
    shutil.copytree(seed, dest, symlinks=False)
    for folder, _dirs, files in os.walk(dest):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        try:
            result.update(self._sync(args, task_vars))
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    # -- steps

    def _sync(self, args: dict[str, Any], task_vars: dict[str, Any]) -> dict[str, Any]:
        src = os.path.realpath(os.path.expanduser(args["src"]))
        dest = args["dest"].rstrip("/")
        ignore = args["ignore"] if args["ignore"] is not None else list(DEFAULT_IGNORE)
        check = bool(self._task.check_mode)
        if not os.path.isabs(dest):
            raise AnsibleActionFail(f"dest {dest!r} is not an absolute path on the workbench")

        listing = self._module(
            "wyvern.workbench.notebook_files",
            {
                "path": dest,
                "id_file": args["id_file"],
                "owner": args["owner"],
                "group": args["group"],
                "ignore": ignore,
                "strays_root": args["strays_root"],
                "strays_prune": args["strays_prune"],
                "requires": args["requires"],
            },
            task_vars,
        )
        if listing.get("missing"):
            return {
                "changed": False,
                "skipped": True,
                "msg": [f"nothing to sync: {listing['missing']} is not on the workbench"],
            }
        remote, remote_id = listing["files"], listing["sync_id"]
        if os.path.exists(src) and not os.path.isdir(src):
            raise AnsibleActionFail(f"src {src} is not a folder; point it at the notebooks folder")
        seeded = False
        if args["seed"] and not os.path.lexists(src):
            seeded = True
            if not check:
                seed_folder(os.path.expanduser(args["seed"]), src)
        local = scan(os.path.expanduser(args["seed"]) if seeded and check else src, ignore)
        state = load_state(args["state_file"])
        base = base_for(state, src, dest, remote_id)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
        plan = plan_sync(local, remote, base, stamp, ignore)

        strays: list[str] = []
        if args["strays_root"] and args["strays_dest"]:
            strays = plan_strays(listing["strays"], scan(args["strays_dest"], ignore))

        if not check:
            self._carry_out(plan, strays, args, src, dest, remote, task_vars)
            write_state(
                args["state_file"],
                {
                    "version": STATE_VERSION,
                    "local_dir": src,
                    "remote_host": task_vars.get("inventory_hostname", ""),
                    "remote_dir": dest,
                    "remote_id": remote_id,
                    "synced_at": stamp,
                    "files": plan.state,
                },
            )

        lines = describe(plan, strays, args["strays_dest"])
        warnings = [line for line in lines if line.startswith(("CONFLICT", "KEPT", "SAVED"))]
        return {
            "changed": plan.changed or bool(strays) or bool(listing.get("changed")) or seeded,
            "seeded": seeded,
            "pushed": plan.push,
            "pulled": plan.pull,
            "deleted_on_workbench": plan.delete_remote,
            "deleted_on_control_node": plan.delete_local,
            "conflicts": [{"path": c.path, "copy": c.copy} for c in plan.conflicts],
            "deletions_not_propagated": [
                {"path": k.path, "deleted_on": k.deleted_on} for k in plan.kept
            ],
            "strays": strays,
            "summary": plan.summary(),
            "first_sync": base is None,
            "msg": lines,
            **({"warnings": warnings} if warnings else {}),
        }

    def _carry_out(
        self,
        plan: Plan,
        strays: list[str],
        args: dict[str, Any],
        src: str,
        dest: str,
        remote: dict[str, str],
        task_vars: dict[str, Any],
    ) -> None:
        os.makedirs(src, exist_ok=True)
        owned = {key: args[key] for key in ("owner", "group") if args[key] is not None}
        made = {os.path.dirname(path) for path in remote}
        for path in plan.push + [c.copy for c in plan.conflicts]:
            self._make_remote_parents(dest, path, made, owned, task_vars)
        # A conflict first saves the workbench's version under the copy's name on both
        # sides; only then does the control node's version take the name there.
        for conflict in plan.conflicts:
            self._fetch(f"{dest}/{conflict.path}", os.path.join(src, conflict.copy), task_vars)
            self._module(
                "ansible.legacy.copy",
                {
                    "src": f"{dest}/{conflict.path}",
                    "dest": f"{dest}/{conflict.copy}",
                    "remote_src": True,
                    "mode": args["mode"],
                    **owned,
                },
                task_vars,
            )
            self._push(os.path.join(src, conflict.path), f"{dest}/{conflict.path}", args, task_vars)
        for path in plan.pull:
            self._fetch(f"{dest}/{path}", os.path.join(src, path), task_vars)
        for path in plan.push:
            self._push(os.path.join(src, path), f"{dest}/{path}", args, task_vars)
        for path in plan.delete_remote:
            self._module(
                "ansible.legacy.file", {"path": f"{dest}/{path}", "state": "absent"}, task_vars
            )
        for path in plan.delete_local:
            target = os.path.join(src, path)
            if os.path.lexists(target):
                os.unlink(target)
        for path in strays:
            self._fetch(
                f"{args['strays_root'].rstrip('/')}/{path}",
                os.path.join(args["strays_dest"], path),
                task_vars,
            )

    # -- the workbench, through other actions and modules

    def _module(self, name: str, module_args: dict[str, Any], task_vars: dict[str, Any]) -> Any:
        res = self._execute_module(module_name=name, module_args=module_args, task_vars=task_vars)
        if res.get("failed"):
            raise AnsibleActionFail(
                f"{name} on {module_args.get('path') or module_args.get('dest')}: {res.get('msg')}"
            )
        return res

    def _action(self, name: str, action_args: dict[str, Any], task_vars: dict[str, Any]) -> Any:
        task = self._task.copy()
        task.args.clear()
        task.args.update(action_args)
        action = self._shared_loader_obj.action_loader.get(
            name,
            task=task,
            connection=self._connection,
            play_context=self._play_context,
            loader=self._loader,
            templar=self._templar,
            shared_loader_obj=self._shared_loader_obj,
        )
        res = action.run(task_vars=task_vars)
        if res.get("failed"):
            raise AnsibleActionFail(f"{name} {action_args.get('dest')}: {res.get('msg')}")
        return res

    def _fetch(self, remote_path: str, local_path: str, task_vars: dict[str, Any]) -> None:
        os.makedirs(os.path.dirname(local_path), exist_ok=True)
        self._action(
            "ansible.legacy.fetch",
            {"src": remote_path, "dest": local_path, "flat": True, "fail_on_missing": True},
            task_vars,
        )

    def _push(
        self, local_path: str, remote_path: str, args: dict[str, Any], task_vars: dict[str, Any]
    ) -> None:
        copy_args = {"src": local_path, "dest": remote_path, "mode": args["mode"]}
        copy_args.update({key: args[key] for key in ("owner", "group") if args[key] is not None})
        self._action("ansible.legacy.copy", copy_args, task_vars)

    def _make_remote_parents(
        self,
        dest: str,
        path: str,
        made: set[str],
        owned: dict[str, str],
        task_vars: dict[str, Any],
    ) -> None:
        """Sub-folders are made owned like the files, so the notebook user can write there."""
        parts = path.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            folder = "/".join(parts[:depth])
            if folder in made:
                continue
            self._module(
                "ansible.legacy.file",
                {"path": f"{dest}/{folder}", "state": "directory", "mode": "0775", **owned},
                task_vars,
            )
            made.add(folder)
