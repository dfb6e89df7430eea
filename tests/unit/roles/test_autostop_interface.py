"""The autostop role's interface (defaults mirrored by argument_specs, README) and its
systemd units, checked by systemd-analyze verify."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "autostop"
TYPES = {"str": str, "bool": bool, "int": int, "list": list}


def test_argument_specs_mirror_the_defaults_exactly() -> None:
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    options = yaml.safe_load((ROLE / "meta/argument_specs.yml").read_text())["argument_specs"][
        "main"
    ]["options"]
    assert set(options) == set(defaults)
    for name, spec in options.items():
        assert name.startswith("autostop_"), name
        assert spec["default"] == defaults[name], name
        assert spec.get("description"), name
        if spec["type"] in TYPES:
            assert isinstance(defaults[name], TYPES[spec["type"]]), name
        if "choices" in spec:
            assert defaults[name] in spec["choices"], name


def test_readme_documents_every_variable() -> None:
    readme = (ROLE / "README.md").read_text()
    for name in yaml.safe_load((ROLE / "defaults/main.yml").read_text()):
        assert f"`{name}`" in readme, name


def test_the_site_flow_and_the_playbook_use_the_role() -> None:
    notebook = yaml.safe_load((ROOT / "playbooks/notebook.yml").read_text())
    roles = [r["role"] for r in notebook[0]["roles"]]
    assert roles.index("wyvern.workbench.autostop") > roles.index("wyvern.workbench.notebook")
    play = yaml.safe_load((ROOT / "playbooks/autostop.yml").read_text())
    assert [r["role"] for r in play[0]["roles"]] == ["wyvern.workbench.autostop"]
    knobs = yaml.safe_load((ROOT / "inventory/group_vars/all/workbench.yml").read_text())
    assert (knobs["workbench_idle_minutes"], knobs["workbench_idle_action"]) == (30, "stop")
    assert knobs["workbench_max_hours"] > 0


def render_units(out: Path) -> list[Path]:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ROLE / "templates"), undefined=jinja2.StrictUndefined
    )
    values = {
        "ansible_managed": "Ansible managed",
        "autostop_name": "workbench",
        # ExecStart must name an executable that exists here for verify to pass.
        "autostop_python": "/usr/bin/python3"
        if Path("/usr/bin/python3").exists()
        else sys.executable,
        "autostop_lib_dir": str(ROLE / "files"),
        "_autostop_config": "/etc/wyvern/autostop/workbench.json",
        "_autostop_unit": "workbench",
        "autostop_interval_seconds": 60,
    }
    paths = []
    for kind in ("autostop", "hardstop"):
        for ext in ("service", "timer"):
            path = out / f"wyvern-{kind}-workbench.{ext}"
            path.write_text(env.get_template(f"{kind}.{ext}.j2").render(**values))
            paths.append(path)
    return paths


def test_units_are_a_service_and_a_timer_each(tmp_path: Path) -> None:
    units = {p.name: p.read_text() for p in render_units(tmp_path)}
    assert "wyvern_hardstop.py --config" in units["wyvern-hardstop-workbench.service"]
    assert "wyvern_autostop.py --config" in units["wyvern-autostop-workbench.service"]
    for kind in ("autostop", "hardstop"):
        timer = units[f"wyvern-{kind}-workbench.timer"]
        assert f"Unit=wyvern-{kind}-workbench.service" in timer
        assert "OnUnitActiveSec=60s" in timer


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="no systemd-analyze (apt-get install systemd)"
)
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    paths = render_units(tmp_path)
    proc = subprocess.run(
        ["systemd-analyze", "verify", *map(str, paths)], capture_output=True, text=True, timeout=60
    )
    # Without systemd as PID 1 it still parses the files; only complaints about our units count.
    ours = [line for line in proc.stderr.splitlines() if "wyvern-" in line]
    assert not ours, proc.stderr


CONTROLLER_ONLY = {
    "ansible.builtin.assert",
    "ansible.builtin.set_fact",
    "ansible.builtin.debug",
    "ansible.builtin.import_tasks",
}


def _modules(path: Path) -> list[str]:
    """The action of each task in a task file, following import_tasks, and a role's
    tasks_from (the include itself runs nothing on the host; what it includes may)."""
    found = []
    for task in yaml.safe_load(path.read_text()):
        (action,) = [key for key in task if "." in key]
        if action == "ansible.builtin.include_role":
            role = task[action]["name"].split(".")[-1]
            found += _modules(ROLE.parent / role / "tasks" / task[action]["tasks_from"])
            continue
        found.append(action)
        if action == "ansible.builtin.import_tasks":
            found += _modules(path.parent / task[action])
    return found


def test_the_install_path_is_one_module_run_on_the_host() -> None:
    """Issue 12: every host module run is a Python start on each no-op rerun of site.yml."""
    actions = _modules(ROLE / "tasks" / "main.yml")
    on_host = [a for a in actions if a not in CONTROLLER_ONLY]
    assert on_host == ["wyvern.workbench.autostop_agent"], on_host
