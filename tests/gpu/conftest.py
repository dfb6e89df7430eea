"""Fixtures for the CUDA tests: a digits data set and the CLI run under `cli_probe.py`.

Self-contained (no fixture from tests/conftest.py), so `scripts/gpu_check.sh` can run this
directory with `--confcutdir tests/gpu` on a GPU machine that has torch but not the
control node's packages (Docker SDK, Ansible, moto).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKLOAD = ROOT / "workload"
PROBE = Path(__file__).resolve().parent / "cli_probe.py"


@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    conv_calls: list[dict[str, Any]]

    def ok(self) -> CliRun:
        assert self.returncode == 0, self.stderr[-3000:]
        return self


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(WORKLOAD), env.get("PYTHONPATH")]))
    env["PYTHONWARNINGS"] = "ignore"
    return env


RunCli = Callable[..., CliRun]


@pytest.fixture(scope="session")
def run_cli(tmp_path_factory: pytest.TempPathFactory) -> RunCli:
    """`python -m transfer_learning ARGS` in a child process, its Conv2d calls recorded."""
    records = tmp_path_factory.mktemp("probe")

    def run(*args: str, timeout: int = 240) -> CliRun:
        record = records / f"{len(list(records.iterdir()))}.json"
        result = subprocess.run(
            [sys.executable, str(PROBE), str(record), *args],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=timeout,
            check=False,
        )
        calls = json.loads(record.read_text())["conv_calls"] if record.is_file() else []
        return CliRun(result.returncode, result.stdout, result.stderr, calls)

    return run


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory, run_cli: RunCli) -> Path:
    root = tmp_path_factory.mktemp("digits") / "digits"
    run_cli("make-dataset", "digits", str(root), "--size", "64").ok()
    return root


def metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.json").read_text())
