"""The autostop role on this machine through its one module run (action plugin and module
autostop_agent), with the background loops for real: a no-op rerun is one module run and
changes nothing, check mode writes nothing, and a -vvv log shows neither the scripts, the
units nor the config."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

PLAYBOOK = """\
- hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: wyvern.workbench.autostop
"""


class Role:
    def __init__(self, tmp: Path, repo_root: Path, env: dict[str, str]) -> None:
        self.tmp, self.root, self.env = tmp, repo_root, env
        self.playbook = tmp / "play.yml"
        self.playbook.write_text(PLAYBOOK)
        self.config = tmp / "etc" / f"agent-{tmp.name}.json"
        self.extra = {
            "autostop_name": f"agent-{tmp.name}",
            "autostop_notebook_home": str(tmp / "home"),
            "autostop_lib_dir": str(tmp / "lib"),
            "autostop_config_dir": str(tmp / "etc"),
            "autostop_unit_dir": str(tmp / "units"),
            "autostop_target": "local",
            "autostop_mode": "loop",
        }

    def play(self, *flags: str, **extra: str) -> subprocess.CompletedProcess[str]:
        values = json.dumps({**self.extra, **extra})
        return subprocess.run(
            ["ansible-playbook", str(self.playbook), "-e", values, *flags],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def stop_loops(self) -> None:
        script = self.tmp / "lib" / "wyvern_autostop.py"
        if script.exists() and self.config.exists():
            subprocess.run(
                ["python3", str(script), "--config", str(self.config), "--stop-loops"],
                capture_output=True,
                timeout=60,
            )


@pytest.fixture
def role(tmp_path: Path, repo_root: Path, ansible_env: dict[str, str]) -> Iterator[Role]:
    it = Role(tmp_path, repo_root, ansible_env)
    try:
        yield it
    finally:
        it.stop_loops()


def test_check_mode_writes_nothing_then_a_rerun_changes_nothing(role: Role) -> None:
    checked = role.play("--check")
    assert checked.returncode == 0, checked.stdout[-4000:]
    assert "changed=1" in checked.stdout, checked.stdout[-4000:]
    assert not (role.tmp / "lib").exists() and not role.config.exists()

    first = role.play()
    assert first.returncode == 0, first.stdout[-4000:]
    assert "Auto-stop: stops after 30 min idle" in first.stdout, first.stdout[-4000:]
    assert "(loop; log in" in first.stdout
    pids = json.loads((role.tmp / "home" / "autostop" / "agent.pid").read_text())["pid"]
    assert Path(f"/proc/{pids}").exists()

    again = role.play("-vvv")
    assert again.returncode == 0, again.stdout[-4000:]
    assert "changed=0" in again.stdout, again.stdout[-4000:]
    # One module run on the host: the only module sent is autostop_agent's.
    sent = set(re.findall(r"AnsiballZ_\w+\.py", again.stdout))
    assert sent == {"AnsiballZ_autostop_agent.py"}, sent
    # Neither code nor config in the log; the invocation names the files only.
    assert "def ensure_loops" not in again.stdout
    assert "import argparse" not in again.stdout
    assert '"idle_seconds"' not in again.stdout and "idle_seconds:" not in again.stdout
    assert f"config_path: {role.config}" in again.stdout


def test_the_recorded_poweroff_behaviour_outlives_another_idle_action(role: Role) -> None:
    assert role.play().returncode == 0
    later = role.play(autostop_idle_action="terminate")
    assert later.returncode == 0, later.stdout[-4000:]
    config = json.loads(role.config.read_text())
    assert (config["action"], config["poweroff_behavior"]) == ("terminate", "stop")
    assert role.config.stat().st_mode & 0o777 == 0o600


UPGRADE = """\
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Name the config and units as the role does
      ansible.builtin.include_role:
        name: wyvern.workbench.autostop
        tasks_from: preflight.yml
        public: true
    - name: Install the units as the role did before autostop_agent (template action)
      ansible.builtin.template:
        src: "{root}/roles/autostop/templates/{{{{ item[0] }}}}.{{{{ item[1] }}}}.j2"
        dest: "{units}/wyvern-{{{{ item[0] }}}}-{{{{ _autostop_unit }}}}.{{{{ item[1] }}}}"
        mode: "0644"
      loop: "{{{{ ['autostop', 'hardstop'] | product(['service', 'timer']) | list }}}}"
    - name: Run the role in check mode
      ansible.builtin.include_role:
        name: wyvern.workbench.autostop
        apply:
          check_mode: true
    - name: The units rendered by the action plugin are those the template action wrote
      ansible.builtin.assert:
        that:
          - _autostop_agent.mode == 'systemd'
          - _autostop_config in _autostop_agent.changed_paths
          - _autostop_agent.changed_paths | select('search', '/units/') | list == []
        fail_msg: "{{{{ _autostop_agent.changed_paths }}}}"
"""


def test_units_render_as_the_template_action_rendered_them(role: Role) -> None:
    """An upgrade from the role's template tasks rewrites no unit (no reload, no restart)."""
    units = role.tmp / "units"
    units.mkdir()
    role.playbook.write_text(UPGRADE.format(root=role.root, units=units))
    result = role.play(autostop_mode="systemd")
    assert result.returncode == 0, result.stdout[-4000:]
    assert len(list(units.iterdir())) == 4
