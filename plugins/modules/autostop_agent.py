#!/usr/bin/python
# Copyright: Wyvern workbench team
# Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: autostop_agent
short_description: Install and run the workbench's idle auto-stop agent and hard limit in one call
version_added: 0.3.0
description:
  - The host side of role C(wyvern.workbench.autostop), in one module run (six to ten module runs
    before, each a Python start on the host, seconds of every no-op rerun of site.yml).
  - Creates the agent's folders (O(lib_dir) 0755, O(config_dir) 0700, O(state_dir) 0755), writes the
    two scripts (mode 0755) only when their SHA-256 differs, and writes the config O(config_path)
    (mode 0600) from O(config).
  - What powering the instance off does (C(poweroff_behavior) in the config) was fixed at launch. An
    empty C(poweroff_behavior) in O(config) keeps the value recorded by an earlier install, else takes
    the idle C(action); a later change of the idle action cannot misstate it.
  - So was whether the instance may stop itself through EC2's API (C(stop_command) in the config, a
    command list); an empty one keeps the command recorded by an earlier install, else none.
  - O(mode=auto) runs the agent by systemd timers where C(/run/systemd/system) exists, else by
    background loops. With timers it writes the units that changed, reloads systemd only then,
    enables and starts both timers (restarts them when a unit changed) and reads the policy
    (C(wyvern_autostop.py --policy)). With loops it runs C(wyvern_autostop.py --ensure-loops),
    which starts the missing loop, restarts one started from another config or script, and prints
    the policy.
  - Runs through an action plugin on the control node, which reads the scripts from the role's
    C(files/) and renders its four unit templates with the task's variables, and keeps their
    contents and the config out of the result's C(invocation).
author:
  - Wyvern workbench team (@wyvern-workbench)
attributes:
  check_mode:
    support: full
    description: Reports what would be written, reloaded, enabled or started; writes and starts
      nothing, and reads no policy.
  diff_mode:
    support: none
    description: Returns no diff.
  idempotent:
    support: full
    description: A second run with the same settings changes nothing.
options:
  name:
    description: The notebook (container) name the agent watches.
    type: str
    required: true
  unit:
    description: The name in the systemd units, C(wyvern-<kind>-<unit>.<service|timer>).
    type: str
    required: true
  config_path:
    description: The agent's config (JSON, root only).
    type: path
    required: true
  config:
    description: The agent's settings, written to O(config_path). An empty C(poweroff_behavior)
      or C(stop_command) is resolved as described above.
    type: dict
    required: true
  lib_dir:
    description: Where the two scripts go.
    type: path
    required: true
  config_dir:
    description: The folder of O(config_path) (mode 0700).
    type: path
    required: true
  state_dir:
    description: The agent's state folder (C(<notebook_home>/autostop)).
    type: path
    required: true
  unit_dir:
    description: Where the systemd units go.
    type: path
    default: /etc/systemd/system
  python:
    description: The host's Python 3 that runs the agent.
    type: path
    default: /usr/bin/python3
  mode:
    description: systemd timers, background loops, or auto (systemd where it runs).
    type: str
    default: auto
    choices: [auto, systemd, loop]
  scripts:
    description:
      - File name to content of the agent's scripts. Set by the action plugin from the role's
        C(files/); a task does not set it.
    type: dict
    default: {}
  units:
    description:
      - Unit file name to content. Set by the action plugin from the role's templates; a task
        does not set it. Needed when the agent runs by systemd.
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Install and run the agent
  wyvern.workbench.autostop_agent:
    name: workbench
    unit: workbench
    config_path: /etc/wyvern/autostop/workbench.json
    lib_dir: /usr/local/lib/wyvern
    config_dir: /etc/wyvern/autostop
    state_dir: /var/lib/wyvern/workbench/autostop
    config:
      name: workbench
      action: stop
      poweroff_behavior: ""
"""

RETURN = r"""
mode:
  description: How the agent runs, systemd or loop.
  returned: always
  type: str
changed_paths:
  description: The folders and files created or rewritten (or that would be, in check mode).
  returned: always
  type: list
  elements: str
actions:
  description: What was done to the agent's processes, such as C(daemon-reload),
    C(enable <timer>), C(restart <timer>) or C(loops).
  returned: always
  type: list
  elements: str
poweroff_behavior:
  description: What powering the instance off does, as written to the config.
  returned: always
  type: str
policy:
  description: The policy the agent applies (C(policy), C(hard_stop_at), C(running), C(warning),
    C(mode)); empty in check mode.
  returned: always
  type: dict
"""

import hashlib
import json
import os
import tempfile
from typing import TYPE_CHECKING, Any

from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC: dict[str, dict[str, Any]] = dict(
    name=dict(type="str", required=True),
    unit=dict(type="str", required=True),
    config_path=dict(type="path", required=True),
    config=dict(type="dict", required=True),
    lib_dir=dict(type="path", required=True),
    config_dir=dict(type="path", required=True),
    state_dir=dict(type="path", required=True),
    unit_dir=dict(type="path", default="/etc/systemd/system"),
    python=dict(type="path", default="/usr/bin/python3"),
    mode=dict(type="str", default="auto", choices=["auto", "systemd", "loop"]),
    scripts=dict(type="dict", default={}),
    units=dict(type="dict", default={}),
)
# Contents kept out of the result's invocation: the scripts and units (the action plugin
# sets them) and the config (no secret, but not log material either).
CONTENT_OPTIONS = ("scripts", "units", "config")
POLICY_FIELDS = ("policy", "hard_stop_at", "running", "warning")
TIMERS = ("autostop", "hardstop")
SYSTEMD_DIR = "/run/systemd/system"

if TYPE_CHECKING:  # the host's Python may be 3.8: no subscripted builtins at run time
    from collections.abc import Callable

    # (argv) -> (rc, stdout, stderr)
    Runner = Callable[[list[str]], tuple[int, str, str]]


class AgentError(Exception):
    pass


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ensure_dir(path: str, mode: int, check: bool) -> bool:
    if os.path.lexists(path) and not os.path.isdir(path):
        raise AgentError(f"{path} exists and is not a folder; move it away")
    if not os.path.isdir(path):
        if not check:
            os.makedirs(path)
            os.chmod(path, mode)
        return True
    if os.stat(path).st_mode & 0o7777 != mode:
        if not check:
            os.chmod(path, mode)
        return True
    return False


def ensure_file(path: str, content: str, mode: int, check: bool) -> bool:
    """Write `content` (atomically) only when the file's SHA-256 differs; set its mode."""
    data = content.encode("utf-8")
    try:
        with open(path, "rb") as handle:
            same = sha256(handle.read()) == sha256(data)
    except FileNotFoundError:
        same = False
    if same:
        if os.stat(path).st_mode & 0o7777 == mode:
            return False
        if not check:
            os.chmod(path, mode)
        return True
    if not check:
        folder = os.path.dirname(path) or "."
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return True


# What the instance's launch fixed, recorded by the first install: what powering off does,
# and the command that stops the instance through EC2's API (its instance profile's right).
LAUNCH_KEYS = ("poweroff_behavior", "stop_command")


def recorded_launch(config_path: str) -> dict[str, Any]:
    """The launch-fixed settings of an earlier install's config; {} without one."""
    try:
        with open(config_path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return {}
    try:
        previous = json.loads(text)
    except ValueError as exc:
        raise AgentError(
            f"the agent's config {config_path} is not JSON ({exc}); it records what powering this "
            "instance off does: fix it, or remove it and set autostop_poweroff_behavior"
        ) from exc
    if not isinstance(previous, dict):
        return {}
    return {key: previous[key] for key in LAUNCH_KEYS if previous.get(key)}


def merged_config(config: dict[str, Any], recorded: dict[str, Any]) -> dict[str, Any]:
    """Each launch-fixed setting: the explicit value, else the recorded one; what powering
    off does falls back to the idle action, the stop command to none."""
    merged = dict(config)
    merged["poweroff_behavior"] = (
        config.get("poweroff_behavior")
        or recorded.get("poweroff_behavior")
        or config.get("action")
        or ""
    )
    merged["stop_command"] = list(config.get("stop_command") or recorded.get("stop_command") or [])
    return merged


def config_text(config: dict[str, Any]) -> str:
    """As the role's `to_nice_json` wrote it, so an earlier install's config stays unchanged."""
    return json.dumps(config, indent=4, sort_keys=True, separators=(",", ": ")) + "\n"


def choose_mode(mode: str, systemd_dir: str = SYSTEMD_DIR) -> str:
    if mode != "auto":
        return mode
    return "systemd" if os.path.exists(systemd_dir) else "loop"


def _json_out(argv: list[str], run: Runner) -> dict[str, Any]:
    out = _must(argv, run)
    try:
        return json.loads(out)
    except ValueError as exc:
        raise AgentError(f"{' '.join(argv)} printed no JSON: {out.strip()[-2000:]}") from exc


def _states(run: Runner, verb: str, timers: list[str]) -> list[str]:
    """`systemctl is-enabled|is-active` of each timer (one line each, whatever the rc)."""
    _, out, _ = run(["systemctl", verb, *timers])
    lines = out.splitlines()
    return lines + ["unknown"] * (len(timers) - len(lines))


def run_systemd(
    params: dict[str, Any], units_changed: bool, check: bool, run: Runner
) -> tuple[list[str], dict[str, Any]]:
    timers = [f"wyvern-{kind}-{params['unit']}.timer" for kind in TIMERS]
    actions: list[str] = []
    if units_changed:
        actions.append("daemon-reload")
        if not check:
            _must(["systemctl", "daemon-reload"], run)
    actions += _bring(timers, "is-enabled", "enabled", "enable", check, run)
    if units_changed:
        actions += [f"restart {timer}" for timer in timers]
        if not check:
            _must(["systemctl", "restart", *timers], run)
    else:
        actions += _bring(timers, "is-active", "active", "start", check, run)
    if check:
        return actions, {}
    script = os.path.join(params["lib_dir"], "wyvern_autostop.py")
    policy = _json_out(
        [params["python"], script, "--config", params["config_path"], "--policy"], run
    )
    return actions, policy


def _must(argv: list[str], run: Runner) -> str:
    """Run `argv`; its stdout, or an error with its output when it fails."""
    rc, out, err = run(argv)
    if rc != 0:
        raise AgentError(f"{' '.join(argv)} failed ({rc}): {(err or out).strip()[-2000:]}")
    return out


def _bring(
    timers: list[str], query: str, wanted: str, verb: str, check: bool, run: Runner
) -> list[str]:
    """`systemctl <verb>` each timer whose `systemctl <query>` is not `wanted`; the actions."""
    actions = []
    for timer, state in zip(timers, _states(run, query, timers)):  # noqa: B905 (Python 3.8 hosts)
        if state.strip() != wanted:
            actions.append(f"{verb} {timer}")
            if not check:
                _must(["systemctl", verb, timer], run)
    return actions


def run_loops(params: dict[str, Any], check: bool, run: Runner) -> tuple[list[str], dict[str, Any]]:
    if check:  # starting them is the only way to know; as before, check mode leaves them
        return [], {}
    script = os.path.join(params["lib_dir"], "wyvern_autostop.py")
    out = _json_out(
        [params["python"], script, "--config", params["config_path"], "--ensure-loops"], run
    )
    return (["loops"] if out.get("changed") else []), out


def apply(
    params: dict[str, Any],
    check: bool,
    run: Runner,
    systemd_dir: str = SYSTEMD_DIR,
) -> dict[str, Any]:
    """Everything the module does; `run` runs a command on the host."""
    mode = choose_mode(params["mode"], systemd_dir)
    if mode == "systemd" and not params["units"]:
        raise AgentError("the agent runs by systemd here but no units were given")
    changed_paths: list[str] = []
    for path, dir_mode in (
        (params["lib_dir"], 0o755),
        (params["config_dir"], 0o700),
        (params["state_dir"], 0o755),
    ):
        if ensure_dir(path, dir_mode, check):
            changed_paths.append(path)
    for name in sorted(params["scripts"]):
        path = os.path.join(params["lib_dir"], name)
        if ensure_file(path, params["scripts"][name], 0o755, check):
            changed_paths.append(path)
    config = merged_config(params["config"], recorded_launch(params["config_path"]))
    if ensure_file(params["config_path"], config_text(config), 0o600, check):
        changed_paths.append(params["config_path"])

    if mode == "systemd":
        units_changed = False
        for name in sorted(params["units"]):
            path = os.path.join(params["unit_dir"], name)
            if ensure_file(path, params["units"][name], 0o644, check):
                changed_paths.append(path)
                units_changed = True
        actions, out = run_systemd(params, units_changed, check, run)
    else:
        actions, out = run_loops(params, check, run)
    policy = {key: out[key] for key in POLICY_FIELDS if key in out}
    if policy:
        policy["mode"] = mode
    return {
        "changed": bool(changed_paths or actions),
        "mode": mode,
        "changed_paths": changed_paths,
        "actions": actions,
        "poweroff_behavior": config["poweroff_behavior"],
        "policy": policy,
    }


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    shown = {key: value for key, value in module.params.items() if key not in CONTENT_OPTIONS}
    invocation = {"module_args": shown}

    def run(argv: list[str]) -> tuple[int, str, str]:
        return module.run_command(argv)

    try:
        result = apply(module.params, module.check_mode, run)
    except (AgentError, OSError) as exc:
        module.fail_json(msg=str(exc), invocation=invocation)
    module.exit_json(invocation=invocation, **result)


if __name__ == "__main__":
    main()
