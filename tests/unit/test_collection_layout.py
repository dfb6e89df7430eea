"""The repository root is a loadable collection and a ready playbook project."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_galaxy_metadata_names_the_collection_and_its_dependencies() -> None:
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    assert (galaxy["namespace"], galaxy["name"]) == ("wyvern", "workbench")
    assert set(galaxy["dependencies"]) >= {"amazon.aws", "community.docker"}
    # Version ranges, never "*": an incompatible major release must not slip in.
    assert all("<" in spec for spec in galaxy["dependencies"].values())
    assert {".venv", "collections"} <= set(galaxy["build_ignore"])


def test_runtime_declares_ansible_range_and_action_group() -> None:
    runtime = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
    assert runtime["requires_ansible"].startswith(">=")
    assert "notebook_container" in runtime["action_groups"]["notebook"]


def test_every_playbook_passes_syntax_check(ansible_env) -> None:
    playbooks = [ROOT / "site.yml", *sorted((ROOT / "playbooks").glob("*.yml"))]
    for playbook in playbooks:
        proc = subprocess.run(
            ["ansible-playbook", "--syntax-check", str(playbook)],
            cwd=ROOT,
            env=ansible_env,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, f"{playbook.name}: {proc.stderr}"


def test_every_plugin_documentation_block_is_yaml() -> None:
    # ansible-doc and ansible-lint read these blocks as YAML; one that does not parse (a
    # plain scalar holding ": ") leaves the plugin without documentation and an error in lint.
    import ast

    blocks = 0
    for source in sorted((ROOT / "plugins").rglob("*.py")):
        for node in ast.parse(source.read_text()).body:
            if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Constant):
                continue
            name = getattr(node.targets[0], "id", "")
            if name in {"DOCUMENTATION", "EXAMPLES", "RETURN"} and node.value.value:
                try:
                    yaml.safe_load(node.value.value)
                except yaml.YAMLError as error:
                    raise AssertionError(f"{source.relative_to(ROOT)} {name}: {error}") from None
                blocks += 1
    assert blocks > 10
