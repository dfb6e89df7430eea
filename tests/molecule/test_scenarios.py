"""Each host role's Molecule scenario, end to end: create, converge, idempotence, verify."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))
HOST_ROLES = ["docker_engine", "nvidia_container_toolkit", "nvidia_driver"]


def test_every_host_role_has_a_scenario() -> None:
    assert set(HOST_ROLES) <= set(SCENARIOS)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(scenario: str, debian_base_image: str, ansible_env: dict[str, str]) -> None:
    # Container names of this run's own: runs in other checkouts share the Docker engine.
    env = {
        **ansible_env,
        "NO_COLOR": "1",
        "MOLECULE_NO_LOG": "false",
        "WYVERN_MOLECULE_RUN": secrets.token_hex(3),
    }
    # The scenarios default to the locally built Debian 12 image; keep a caller's choice.
    env.setdefault("WYVERN_MOLECULE_IMAGE", debian_base_image)
    started = time.monotonic()
    proc = subprocess.run(
        ["molecule", "test", "-s", scenario],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = proc.stdout + proc.stderr
    print(f"molecule test -s {scenario}: {time.monotonic() - started:.0f} s")
    assert proc.returncode == 0, output[-6000:]
    # Idempotence and verify are what a user relies on; make sure they really ran, and the
    # dry run on the fresh host too where the scenario has one.
    sequence = yaml.safe_load((ROOT / "molecule" / scenario / "molecule.yml").read_text())
    dry_run = ["check"] if "check" in sequence["scenario"]["test_sequence"] else []
    for action in ("converge", "idempotence", "verify", *dry_run):
        assert f"{scenario} > {action}] Executed: Successful" in output, output[-3000:]


def test_scenarios_use_local_images_and_our_prefix() -> None:
    for scenario in SCENARIOS:
        text = (ROOT / "molecule" / scenario / "molecule.yml").read_text()
        assert "wyvern/debian-base:bookworm" in text, scenario
        assert "name: wyvern-test-hostroles-" in text, scenario
        assert os.path.exists(ROOT / "molecule" / scenario / "verify.yml"), scenario
