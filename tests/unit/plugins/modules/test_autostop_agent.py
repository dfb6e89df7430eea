"""autostop_agent, the autostop role's one module run on the host: its options declared
once (DOCUMENTATION equals ARGUMENT_SPEC), the config merge that keeps the recorded
power-off behaviour, writes only on change, check mode, and the systemd and loop paths
with a fake command runner standing in for systemctl and the agent's script."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.plugins.filter.core import to_nice_json
from ansible_collections.wyvern.workbench.plugins.action import autostop_agent as action
from ansible_collections.wyvern.workbench.plugins.modules import autostop_agent

from tests.support.module_docs import assert_option_agrees

DOC = yaml.safe_load(autostop_agent.DOCUMENTATION)
SPEC = autostop_agent.ARGUMENT_SPEC
POLICY = {"policy": "stops after 30 min idle", "hard_stop_at": None, "running": True}


def test_documentation_lists_exactly_the_options_of_the_argument_spec() -> None:
    assert set(DOC["options"]) == set(SPEC)


@pytest.mark.parametrize("option", sorted(SPEC))
def test_documentation_agrees_with_the_argument_spec(option: str) -> None:
    assert_option_agrees(DOC["options"][option], SPEC[option])


def test_the_action_plugin_takes_the_spec_less_what_it_sets_itself() -> None:
    assert set(action.TASK_SPEC) == set(SPEC) - {"scripts", "units"}
    assert set(autostop_agent.CONTENT_OPTIONS) >= {"scripts", "units", "config"}


class Host:
    """Records commands; answers systemctl from `enabled`/`active`, the script with JSON."""

    def __init__(self, enabled: bool = False, active: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.enabled, self.active = enabled, active
        self.loops_changed = True

    def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        self.calls.append(argv)
        if argv[0] == "systemctl":
            verb, names = argv[1], argv[2:]
            if verb == "is-enabled":
                return (
                    0,
                    "".join(("enabled" if self.enabled else "disabled") + "\n" for _ in names),
                    "",
                )
            if verb == "is-active":
                return (
                    0,
                    "".join(("active" if self.active else "inactive") + "\n" for _ in names),
                    "",
                )
            if verb == "enable":
                self.enabled = True
            if verb in ("start", "restart"):
                self.active = True
            return 0, "", ""
        if argv[-1] == "--ensure-loops":
            changed, self.loops_changed = self.loops_changed, False
            return 0, json.dumps({"changed": changed, "pids": {}, **POLICY, "warning": ""}), ""
        if argv[-1] == "--policy":
            return 0, json.dumps({**POLICY, "warning": "soon"}), ""
        raise AssertionError(argv)

    def acts(self) -> list[list[str]]:
        """The commands that change something (not queries, not the policy)."""
        return [
            c
            for c in self.calls
            if (c[0] == "systemctl" and c[1] not in ("is-enabled", "is-active"))
            or c[-1] == "--ensure-loops"
        ]


def params(tmp: Path, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "nb",
        "unit": "nb",
        "config_path": str(tmp / "etc" / "nb.json"),
        "config": {"name": "nb", "action": "stop", "poweroff_behavior": "", "idle_seconds": 1800.0},
        "lib_dir": str(tmp / "lib"),
        "config_dir": str(tmp / "etc"),
        "state_dir": str(tmp / "home" / "autostop"),
        "unit_dir": str(tmp / "units"),
        "python": "/usr/bin/python3",
        "mode": "loop",
        "scripts": {"wyvern_autostop.py": "print('agent')\n", "wyvern_hardstop.py": "print('h')\n"},
        "units": {
            "wyvern-autostop-nb.service": "[Service]\n",
            "wyvern-autostop-nb.timer": "[Timer]\n",
        },
    }
    base.update(overrides)
    (tmp / "units").mkdir(exist_ok=True)
    return base


def mode_of(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def recorded(tmp: Path) -> str:
    return json.loads((tmp / "etc" / "nb.json").read_text())["poweroff_behavior"]


def test_config_is_written_as_the_role_s_to_nice_json_wrote_it() -> None:
    config = {"b": 1.0, "a": [1, "x"], "c": True, "d": "é"}
    assert autostop_agent.config_text(config) == to_nice_json(config) + "\n"


def test_first_install_makes_folders_scripts_and_config_with_their_modes(tmp_path: Path) -> None:
    host = Host()
    result = autostop_agent.apply(params(tmp_path), False, host)
    assert result["changed"] and result["mode"] == "loop"
    assert mode_of(tmp_path / "lib") == 0o755
    assert mode_of(tmp_path / "etc") == 0o700
    assert mode_of(tmp_path / "home" / "autostop") == 0o755
    assert (tmp_path / "lib" / "wyvern_autostop.py").read_text() == "print('agent')\n"
    assert mode_of(tmp_path / "lib" / "wyvern_hardstop.py") == 0o755
    assert mode_of(tmp_path / "etc" / "nb.json") == 0o600
    assert recorded(tmp_path) == "stop"  # nothing recorded yet: the idle action
    assert result["policy"] == {**POLICY, "warning": "", "mode": "loop"}
    assert host.acts() == [
        ["/usr/bin/python3", str(tmp_path / "lib" / "wyvern_autostop.py"), "--config",
         str(tmp_path / "etc" / "nb.json"), "--ensure-loops"]
    ]  # fmt: skip


def test_a_second_run_changes_nothing(tmp_path: Path) -> None:
    host = Host()
    autostop_agent.apply(params(tmp_path), False, host)
    again = autostop_agent.apply(params(tmp_path), False, host)
    assert not again["changed"], again
    assert again["changed_paths"] == [] and again["actions"] == []
    assert again["policy"]["policy"] == POLICY["policy"]


def test_the_recorded_poweroff_behaviour_survives_another_idle_action(tmp_path: Path) -> None:
    autostop_agent.apply(params(tmp_path), False, Host())
    later = params(tmp_path, config={"name": "nb", "action": "terminate", "poweroff_behavior": ""})
    result = autostop_agent.apply(later, False, Host())
    assert recorded(tmp_path) == "stop" and result["poweroff_behavior"] == "stop"
    assert json.loads((tmp_path / "etc" / "nb.json").read_text())["action"] == "terminate"
    explicit = params(
        tmp_path, config={"name": "nb", "action": "stop", "poweroff_behavior": "terminate"}
    )
    autostop_agent.apply(explicit, False, Host())
    assert recorded(tmp_path) == "terminate"  # autostop_poweroff_behavior wins


def test_the_recorded_stop_command_survives_a_later_install_without_one(tmp_path: Path) -> None:
    """site.yml (which knows the instance profile) records how the instance stops itself; a
    later autostop.yml, which does not, keeps it; a fresh install without one has none."""
    command = [
        "/usr/bin/python3",
        "/lib/wyvern_durable.py",
        "--config",
        "/etc/d.json",
        "--stop-instance",
    ]
    config = {"name": "nb", "action": "terminate", "poweroff_behavior": "", "stop_command": command}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    autostop_agent.apply(params(tmp_path / "a", config=config), False, Host())
    later = dict(config, stop_command=[], action="stop")
    autostop_agent.apply(params(tmp_path / "a", config=later), False, Host())
    written = json.loads((tmp_path / "a" / "etc" / "nb.json").read_text())
    assert written["stop_command"] == command and written["action"] == "stop"
    fresh = dict(config, stop_command=[])
    autostop_agent.apply(params(tmp_path / "b", config=fresh), False, Host())
    assert json.loads((tmp_path / "b" / "etc" / "nb.json").read_text())["stop_command"] == []


def test_a_config_that_is_not_json_fails_naming_it(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nb.json").write_text("{broken")
    with pytest.raises(autostop_agent.AgentError, match=r"nb\.json is not JSON"):
        autostop_agent.apply(params(tmp_path), False, Host())


def test_scripts_are_rewritten_only_when_their_content_changes(tmp_path: Path) -> None:
    autostop_agent.apply(params(tmp_path), False, Host())
    script = tmp_path / "lib" / "wyvern_autostop.py"
    before = script.stat().st_ino
    autostop_agent.apply(params(tmp_path), False, Host())
    assert script.stat().st_ino == before  # not even rewritten with the same bytes
    new = params(tmp_path)
    new["scripts"] = {**new["scripts"], "wyvern_autostop.py": "print('v2')\n"}
    result = autostop_agent.apply(new, False, Host())
    assert script.read_text() == "print('v2')\n" and mode_of(script) == 0o755
    assert result["changed_paths"] == [str(script)]
    os.chmod(script, 0o644)
    result = autostop_agent.apply(new, False, Host())
    assert mode_of(script) == 0o755 and result["changed_paths"] == [str(script)]


def test_check_mode_writes_nothing_and_starts_nothing(tmp_path: Path) -> None:
    host = Host()
    result = autostop_agent.apply(params(tmp_path), True, host)
    assert result["changed"] and str(tmp_path / "etc" / "nb.json") in result["changed_paths"]
    assert not (tmp_path / "lib").exists() and not (tmp_path / "etc").exists()
    assert host.calls == [] and result["policy"] == {}
    # Installed: a changed setting is reported, not written.
    autostop_agent.apply(params(tmp_path), False, Host())
    text = (tmp_path / "etc" / "nb.json").read_text()
    changed = params(tmp_path, config={"name": "nb", "action": "stop", "poweroff_behavior": "", "idle_seconds": 60.0})  # fmt: skip
    result = autostop_agent.apply(changed, True, host)
    assert result["changed_paths"] == [str(tmp_path / "etc" / "nb.json")]
    assert (tmp_path / "etc" / "nb.json").read_text() == text


def test_systemd_first_run_reloads_enables_and_restarts_then_reads_the_policy(
    tmp_path: Path,
) -> None:
    host = Host()
    result = autostop_agent.apply(params(tmp_path, mode="systemd"), False, host)
    timers = ["wyvern-autostop-nb.timer", "wyvern-hardstop-nb.timer"]
    assert host.acts() == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", timers[0]],
        ["systemctl", "enable", timers[1]],
        ["systemctl", "restart", *timers],
    ]
    assert (tmp_path / "units" / "wyvern-autostop-nb.timer").read_text() == "[Timer]\n"
    assert mode_of(tmp_path / "units" / "wyvern-autostop-nb.service") == 0o644
    assert result["policy"] == {**POLICY, "warning": "soon", "mode": "systemd"}
    assert host.calls[-1][-1] == "--policy"


def test_systemd_rerun_only_queries_and_a_stopped_timer_is_started(tmp_path: Path) -> None:
    autostop_agent.apply(params(tmp_path, mode="systemd"), False, Host())
    host = Host(enabled=True, active=True)
    again = autostop_agent.apply(params(tmp_path, mode="systemd"), False, host)
    assert not again["changed"] and host.acts() == []
    assert again["policy"]["mode"] == "systemd"
    stopped = Host(enabled=True, active=False)
    result = autostop_agent.apply(params(tmp_path, mode="systemd"), False, stopped)
    assert result["changed"] and ["systemctl", "daemon-reload"] not in stopped.acts()
    assert ["systemctl", "start", "wyvern-autostop-nb.timer"] in stopped.acts()


def test_systemd_a_changed_unit_reloads_and_restarts(tmp_path: Path) -> None:
    autostop_agent.apply(params(tmp_path, mode="systemd"), False, Host())
    new = params(tmp_path, mode="systemd")
    new["units"] = {**new["units"], "wyvern-autostop-nb.timer": "[Timer]\nOnUnitActiveSec=5s\n"}
    host = Host(enabled=True, active=True)
    autostop_agent.apply(new, False, host)
    assert host.acts() == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "restart", "wyvern-autostop-nb.timer", "wyvern-hardstop-nb.timer"],
    ]


def test_auto_chooses_systemd_only_where_it_runs(tmp_path: Path) -> None:
    assert autostop_agent.choose_mode("auto", str(tmp_path / "none")) == "loop"
    assert autostop_agent.choose_mode("auto", str(tmp_path)) == "systemd"
    assert autostop_agent.choose_mode("loop", str(tmp_path)) == "loop"
    result = autostop_agent.apply(
        params(tmp_path, mode="auto"), False, Host(), systemd_dir=str(tmp_path)
    )
    assert result["mode"] == "systemd"


def test_a_failing_agent_fails_the_run_with_its_error(tmp_path: Path) -> None:
    def broken(argv: list[str]) -> tuple[int, str, str]:
        return 1, "", "Traceback: boom"

    with pytest.raises(autostop_agent.AgentError, match="boom"):
        autostop_agent.apply(params(tmp_path), False, broken)
