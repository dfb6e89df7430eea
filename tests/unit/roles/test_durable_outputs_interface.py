"""The durable_outputs role's interface: defaults mirrored by argument_specs, each documented."""

from __future__ import annotations

from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[3] / "roles" / "durable_outputs"


def test_argument_specs_mirror_the_defaults_exactly() -> None:
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    specs = yaml.safe_load((ROLE / "meta/argument_specs.yml").read_text())["argument_specs"]
    for entry in ("main", "absent"):
        options = specs[entry]["options"]
        assert set(options) == set(defaults), entry
        assert {name: spec.get("default") for name, spec in options.items()} == defaults
        assert all(spec.get("description") for spec in options.values())
    assert all(name.startswith("durable_outputs_") for name in defaults)


def test_readme_documents_every_variable() -> None:
    readme = (ROLE / "README.md").read_text()
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    assert [name for name in defaults if f"`{name}`" not in readme] == []
