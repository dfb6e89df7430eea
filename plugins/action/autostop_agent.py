# Copyright: Wyvern workbench team
# Apache-2.0
"""Action plugin for wyvern.workbench.autostop_agent: the control node's side.

Reads the agent's two scripts from the role's files/ and, unless the agent runs by loops,
renders the role's four systemd unit templates with the task's variables (as the template
action does: same search path, ``ansible_managed``, trim_blocks), then runs the module once
on the host with their contents. The contents and the config stay out of the result's
``invocation``: a -vvv log shows which files, not a thousand lines of code.
"""

from __future__ import annotations

import os
from typing import Any

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.plugins.action import ActionBase
from ansible_collections.wyvern.workbench.plugins.modules.autostop_agent import (
    ARGUMENT_SPEC,
    CONTENT_OPTIONS,
    TIMERS,
)

try:  # ansible-core 2.19+
    from ansible._internal._templating._template_vars import generate_ansible_template_vars
    from ansible.template import trust_as_template
except ImportError:  # pragma: no cover - older ansible-core
    from ansible.template import generate_ansible_template_vars  # type: ignore[no-redef]

    def trust_as_template(value: str) -> str:  # type: ignore[misc]
        return value


SCRIPTS = ("wyvern_autostop.py", "wyvern_hardstop.py")
# The options a task sets; the contents are the plugin's.
TASK_SPEC = {key: value for key, value in ARGUMENT_SPEC.items() if key not in ("scripts", "units")}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        _, args = self.validate_argument_spec(argument_spec=TASK_SPEC)
        module_args = dict(self._task.args)
        module_args["scripts"] = {name: self._read("files", name) for name in SCRIPTS}
        module_args["units"] = (
            {} if args["mode"] == "loop" else self._units(args["unit"], task_vars)
        )
        res = self._execute_module(
            module_name="wyvern.workbench.autostop_agent",
            module_args=module_args,
            task_vars=task_vars,
        )
        # The module already leaves them out; a failure before it starts would not.
        shown = {key: value for key, value in args.items() if key not in CONTENT_OPTIONS}
        res["invocation"] = {"module_args": shown}
        result.update(res)
        return result

    def _read(self, kind: str, name: str) -> str:
        try:
            path = self._find_needle(kind, name)
        except AnsibleError as exc:
            raise AnsibleActionFail(f"cannot find the role's {kind}/{name}: {exc}") from exc
        with open(path, encoding="utf-8") as handle:
            return handle.read()

    def _units(self, unit: str, task_vars: dict[str, Any]) -> dict[str, str]:
        units = {}
        for kind in TIMERS:
            for ext in ("service", "timer"):
                src = f"{kind}.{ext}.j2"
                dest = f"wyvern-{kind}-{unit}.{ext}"
                units[dest] = self._render(src, dest, task_vars)
        return units

    def _render(self, src: str, dest: str, task_vars: dict[str, Any]) -> str:
        """As ansible.builtin.template renders `src` (its defaults: trim_blocks, \\n)."""
        try:
            source = self._find_needle("templates", src)
        except AnsibleError as exc:
            raise AnsibleActionFail(f"cannot find the role's templates/{src}: {exc}") from exc
        searchpath = list(task_vars.get("ansible_search_path", []))
        searchpath.extend([self._loader._basedir, os.path.dirname(source)])
        searchpath = [p for base in searchpath for p in (os.path.join(base, "templates"), base)]
        temp_vars = dict(task_vars)
        temp_vars.update(
            generate_ansible_template_vars(
                path=src,
                fullpath=source,
                dest_path=dest,
                include_ansible_managed="ansible_managed" not in temp_vars,
            )
        )
        templar = self._templar.copy_with_new_env(
            searchpath=searchpath, available_variables=temp_vars
        )
        data = trust_as_template(self._loader.get_text_file_contents(source))
        rendered = templar.template(data, escape_backslashes=False, overrides={"trim_blocks": True})
        return "" if rendered is None else str(rendered)
