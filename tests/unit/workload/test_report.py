"""environment.json: values from the notebook container's variables, else from the checkout."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from transfer_learning import report


def test_container_variables_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_IMAGE_ID", "sha256:abc")
    monkeypatch.setenv("WORKBENCH_GIT_REVISION", "f" * 40)
    monkeypatch.setenv("WORKBENCH_LOCK_SHA256", "0" * 64)
    env = report.environment({"seed": 3, "epochs": 1})
    assert env["image_id"] == "sha256:abc"
    assert env["git_revision"] == "f" * 40
    assert env["lock_sha256"] == "0" * 64
    assert env["seed"] == 3
    assert env["arguments"] == {"seed": 3, "epochs": 1}
    for key in ("python", "torch", "torchvision", "cuda", "cudnn", "gpus", "cpu", "hostname"):
        assert key in env


def test_fallbacks_outside_the_container(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("WORKBENCH_IMAGE_ID", "WORKBENCH_GIT_REVISION", "WORKBENCH_LOCK_SHA256"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(report, "WORKLOAD_DIR", tmp_path)  # not a git checkout, no lock file
    env = report.environment({})
    assert env["image_id"] is None
    assert env["git_revision"] is None
    assert env["lock_sha256"] is None
    lock = tmp_path / "requirements.lock"
    lock.write_text("torch==2.14.1\n")
    assert report.environment({})["lock_sha256"] == hashlib.sha256(lock.read_bytes()).hexdigest()


def test_git_revision_of_this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKBENCH_GIT_REVISION", raising=False)
    revision = report.environment({})["git_revision"]
    assert revision is not None
    assert len(revision) == 40
