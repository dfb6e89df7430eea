"""Fixtures for the workload's CLI runs: a small digits data set, a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# Test this checkout's package, in this process and in every child (CLI, torchrun, kernel).
WORKLOAD = str(Path(__file__).resolve().parents[3] / "workload")
if sys.path[:1] != [WORKLOAD]:
    sys.path.insert(0, WORKLOAD)

# Small enough for two shared cores: 32 px, a sample of each split, one worker-free process.
# What every finished run leaves in outputs/<run-id>/.
RUN_OUTPUTS = (
    "metrics.json",
    "history.csv",
    "curves.png",
    "confusion.png",
    "model.pt",
    "environment.json",
)

TINY = [
    "--weights",
    "none",
    "--image-size",
    "32",
    "--limit",
    "160",
    "--batch-size",
    "16",
    "--workers",
    "0",
    "--device",
    "cpu",
]


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transfer_learning.data import make_digits

    return make_digits(tmp_path_factory.mktemp("digits") / "digits", size=32)


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("WORKBENCH_IMAGE_ID", "WORKBENCH_GIT_REVISION", "WORKBENCH_LOCK_SHA256"):
        env.pop(var, None)
    env["PYTHONWARNINGS"] = "ignore"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [WORKLOAD, env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def run_cli() -> RunCli:
    def run(
        *args: str,
        env: dict[str, str] | None = None,
        module: list[str] | None = None,
        timeout: int = 900,  # a shared 2-core CI machine can be 10x slower than idle
    ) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, *(module or ["-m", "transfer_learning"]), *args]
        return subprocess.run(
            command, capture_output=True, text=True, env=_env(env), timeout=timeout, check=False
        )

    return run


def metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.json").read_text())


def learning_curve(run_dir: Path) -> list[tuple[float, ...]]:
    """Per-epoch numbers that depend on the seed only (no timings)."""
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
    return [tuple(row[k] for k in keys) for row in metrics(run_dir)["epochs"]]
