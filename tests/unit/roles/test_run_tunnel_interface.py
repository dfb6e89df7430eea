"""The run and tunnel roles' public interface: defaults mirrored by argument_specs, every
variable documented, and playbooks that are wiring only."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
YAML_TYPES = {"str": str, "bool": bool, "int": int, "list": list, "dict": dict, "raw": object}


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


@pytest.mark.parametrize("role", ["run", "tunnel"])
def test_argument_specs_mirror_the_defaults(role: str) -> None:
    defaults = _load(ROOT / "roles" / role / "defaults" / "main.yml")
    options = _load(ROOT / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"][
        "main"
    ]["options"]
    assert set(options) == set(defaults)
    for name, spec in options.items():
        assert name.startswith(f"{role}_"), name
        assert spec["default"] == defaults[name], name
        assert isinstance(defaults[name], YAML_TYPES[spec["type"]]), name
        assert spec.get("description"), name
        if "choices" in spec:
            assert defaults[name] in spec["choices"], name


@pytest.mark.parametrize("role", ["run", "tunnel"])
def test_readme_documents_every_variable(role: str) -> None:
    readme = (ROOT / "roles" / role / "README.md").read_text()
    for name in _load(ROOT / "roles" / role / "defaults" / "main.yml"):
        assert f"`{name}`" in readme, name


@pytest.mark.parametrize("playbook", ["run.yml", "tunnel.yml"])
def test_playbooks_set_no_role_settings(playbook: str) -> None:
    """A play var outranks group_vars: run_*/tunnel_* set in a play would hide them again."""
    for play in yaml.safe_load((ROOT / "playbooks" / playbook).read_text()):
        assert not any(name.startswith(("run_", "tunnel_")) for name in play.get("vars") or {}), (
            play["name"]
        )
        assert "tasks" not in play, play["name"]
