"""The workload's CUDA path through its CLI, on a real GPU (`pytest -m cuda tests/gpu`).

Deselected by default (`-m "not cuda"` in pyproject's addopts): CI has no GPU. Run on a GPU
machine by `scripts/gpu_check.sh` (`make gpu-check`). Each test drives
`python -m transfer_learning train` and reads what a user gets: the run's output files, its
log, and what its convolutions saw (device, memory format, dtype; see cli_probe.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gpu.conftest import CliRun, RunCli, metrics

pytestmark = pytest.mark.cuda

SMALL = [
    "--weights",
    "none",
    "--image-size",
    "64",
    "--limit",
    "256",
    "--batch-size",
    "32",
    "--workers",
    "2",
]
HALF = {"torch.bfloat16", "torch.float16"}


def _train(run_cli: RunCli, data: Path, out: Path, *extra: str) -> CliRun:
    return run_cli("train", "--data", str(data), "--output-dir", str(out), *SMALL, *extra).ok()


def _training_calls(run: CliRun) -> list[dict[str, object]]:
    calls = [c for c in run.conv_calls if c["training"] and c["grad"]]
    assert calls, f"no convolution ran in training: {run.conv_calls}"
    return calls


def test_device_cuda_trains_with_amp_and_channels_last(
    tmp_path: Path, digits_dir: Path, run_cli: RunCli
) -> None:
    run = _train(
        run_cli, digits_dir, tmp_path, "--device", "cuda", "--run-id", "r", "--epochs", "1"
    )
    assert "on cuda:0" in run.stdout
    assert metrics(tmp_path / "r")["device"] == "cuda:0"
    # Every convolution, training and validation, ran on the GPU on channels_last input.
    assert {c["device"] for c in run.conv_calls} == {"cuda"}
    assert {c["memory_format"] for c in run.conv_calls} == {"channels_last"}
    # Mixed precision: the training convolutions' outputs are half precision.
    assert {c["dtype"] for c in _training_calls(run)} <= HALF


def test_no_amp_trains_in_float32(tmp_path: Path, digits_dir: Path, run_cli: RunCli) -> None:
    run = _train(
        run_cli,
        digits_dir,
        tmp_path,
        "--device",
        "cuda",
        "--no-amp",
        "--run-id",
        "r",
        "--epochs",
        "1",
    )
    assert {c["device"] for c in run.conv_calls} == {"cuda"}
    assert {c["dtype"] for c in run.conv_calls} == {"torch.float32"}
    assert {c["memory_format"] for c in run.conv_calls} == {"channels_last"}


def test_device_auto_picks_the_gpu(tmp_path: Path, digits_dir: Path, run_cli: RunCli) -> None:
    run = _train(
        run_cli, digits_dir, tmp_path, "--device", "auto", "--run-id", "r", "--epochs", "1"
    )
    assert metrics(tmp_path / "r")["device"] == "cuda:0"
    assert {c["device"] for c in run.conv_calls} == {"cuda"}


def test_feature_extract_caches_features_on_the_gpu(
    tmp_path: Path, digits_dir: Path, run_cli: RunCli
) -> None:
    run = _train(
        run_cli,
        digits_dir,
        tmp_path,
        "--device",
        "cuda",
        "--mode",
        "feature-extract",
        "--run-id",
        "r",
        "--epochs",
        "3",
    )
    m = metrics(tmp_path / "r")
    assert m["cached_features"] is True
    assert m["device"] == "cuda:0"
    # The backbone ran once per image (feature caching), never with gradients.
    assert {c["device"] for c in run.conv_calls} == {"cuda"}
    assert not any(c["grad"] for c in run.conv_calls)
    assert {c["dtype"] for c in run.conv_calls} <= HALF
    assert len(m["epochs"]) == 3


def test_resume_on_cuda_equals_an_uninterrupted_run(
    tmp_path: Path, digits_dir: Path, run_cli: RunCli
) -> None:
    import torch

    common = ["--device", "cuda", "--deterministic", "--seed", "1", "--step-size", "2"]
    _train(run_cli, digits_dir, tmp_path, *common, "--run-id", "straight", "--epochs", "3")
    _train(run_cli, digits_dir, tmp_path, *common, "--run-id", "resumed", "--epochs", "1")
    resumed = _train(
        run_cli, digits_dir, tmp_path, *common, "--run-id", "resumed", "--epochs", "3", "--resume"
    )
    assert "resuming after epoch 1" in resumed.stdout
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
    curves = {
        name: [tuple(row[k] for k in keys) for row in metrics(tmp_path / name)["epochs"]]
        for name in ("straight", "resumed")
    }
    assert curves["resumed"] == curves["straight"]
    assert len(curves["straight"]) == 3
    # The last epoch's weights, bit for bit (AMP and the optimizer state came back exactly).
    states = {
        name: torch.load(tmp_path / name / "checkpoint.pt", map_location="cpu", weights_only=True)
        for name in ("straight", "resumed")
    }
    straight, again = states["straight"]["model"], states["resumed"]["model"]
    assert straight.keys() == again.keys()
    different = [k for k in straight if not torch.equal(straight[k], again[k])]
    assert not different, f"weights differ after resume: {different[:5]}"
