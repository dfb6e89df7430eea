"""The host roles' public interface: defaults/main.yml mirrored by meta/argument_specs.yml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HOST_ROLES = ["nvidia_driver", "docker_engine", "nvidia_container_toolkit"]
YAML_TYPES = {"str": str, "bool": bool, "int": int, "list": list, "dict": dict}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


@pytest.mark.parametrize("role", HOST_ROLES)
def test_defaults_mirror_argument_specs(role: str) -> None:
    defaults = load(ROOT / "roles" / role / "defaults" / "main.yml")
    options = load(ROOT / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]["main"][
        "options"
    ]
    assert set(defaults) == set(options), f"{role}: defaults and argument_specs differ"
    for name, spec in options.items():
        assert name.startswith(f"{role}_"), name
        assert spec["default"] == defaults[name], f"{role}: default of {name}"
        assert isinstance(defaults[name], YAML_TYPES[spec["type"]]), f"{role}: type of {name}"
        assert spec.get("description"), f"{role}: {name} has no description"
        if "choices" in spec:
            assert defaults[name] in spec["choices"], name


@pytest.mark.parametrize("role", HOST_ROLES)
def test_readme_documents_every_variable(role: str) -> None:
    readme = (ROOT / "roles" / role / "README.md").read_text()
    for name in load(ROOT / "roles" / role / "defaults" / "main.yml"):
        assert f"`{name}`" in readme, f"{role}/README.md lacks {name}"


def test_driver_default_branch_runs_cuda13_wheels() -> None:
    defaults = load(ROOT / "roles" / "nvidia_driver" / "defaults" / "main.yml")
    assert int(defaults["nvidia_driver_branch"]) >= 580
    assert float(defaults["nvidia_driver_min_version"]) >= 580


def test_daemon_json_has_one_owner() -> None:
    """Only docker_engine writes daemon.json; the toolkit goes through its `daemon` entry point."""
    handlers = load(ROOT / "roles" / "docker_engine" / "handlers" / "main.yml")
    assert any(h.get("listen") == "docker_engine_restart" for h in handlers)
    specs = load(ROOT / "roles" / "docker_engine" / "meta" / "argument_specs.yml")["argument_specs"]
    assert "daemon" in specs
    toolkit = ROOT / "roles" / "nvidia_container_toolkit"
    deps = load(toolkit / "meta" / "main.yml")["dependencies"]
    assert [d["role"] for d in deps] == ["wyvern.workbench.docker_engine"]
    tasks = "\n".join(p.read_text() for p in sorted((toolkit / "tasks").glob("*.yml")))
    assert "tasks_from: daemon.yml" in tasks
    assert "nvidia-ctk" not in tasks
    # No other role reads or writes the file itself.
    touching = [
        p.relative_to(ROOT)
        for p in sorted((ROOT / "roles").rglob("*.yml"))
        if re.search(r"^\s*(dest|path|src):.*daemon", p.read_text(), re.M)
    ]
    assert touching == [Path("roles/docker_engine/tasks/daemon.yml")]
