"""SIGTERM, SIGINT and SIGUSR1 mid-epoch: a checkpoint from which --resume continues exactly."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.workload.conftest import TINY, RunCli, _env, learning_curve, metrics

# 48 train images in batches of 2: 24 steps an epoch, so a signal lands inside one.
ARGS = [*TINY, "--seed", "3", "--epochs", "2", "--batch-size", "2", "--limit", "48"]
STEPS = 24


def _train(data: Path, out: Path, run_id: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "transfer_learning", "train", "--data", str(data)]
    command += ["--output-dir", str(out), "--run-id", run_id, *ARGS]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(None)
    )


def _signal_in_epoch_two(proc: subprocess.Popen[str], sig: int) -> list[str]:
    """Wait for epoch 1's line, then signal a quarter into epoch 2 (timed from epoch 1).

    Evaluation takes about a quarter of an epoch here, so this lands in epoch 2's training
    even when epoch 2 runs faster than epoch 1 (which also warms up)."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("epoch 1/2"):
            seconds = float(re.search(r"([0-9.]+)s$", line.strip()).group(1))  # type: ignore[union-attr]
            time.sleep(0.25 * seconds)
            proc.send_signal(sig)
            return lines
    raise AssertionError(f"no epoch line: {lines} {proc.stderr.read() if proc.stderr else ''}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, digits_dir: Path, run_cli: RunCli) -> Path:
    out = tmp_path_factory.mktemp("reference")
    result = run_cli("train", "--data", str(digits_dir), "--output-dir", str(out), *ARGS)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = out.iterdir()
    return run_dir


def _resume(run_cli: RunCli, data: Path, out: Path, run_id: str, step: int, epoch: int = 2) -> None:
    """--resume from a checkpoint saved in epoch 2 after `step`, or (`epoch` 1) after epoch 1,
    as progress.json says the run stopped."""
    result = run_cli("train", "--data", str(data), "--output-dir", str(out), *ARGS, "--resume")
    assert result.returncode == 0, result.stderr[-2000:]
    where = "after epoch 1" if epoch == 1 else f"in epoch 2 after step {step}"
    assert f"resuming {where}" in result.stdout
    assert f"run {run_id}" in result.stdout  # no --run-id: the newest checkpoint


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_saves_the_step_and_resume_is_exact(
    sig: int, reference: Path, tmp_path: Path, digits_dir: Path, run_cli: RunCli
) -> None:
    proc = _train(digits_dir, tmp_path, "stopped")
    _signal_in_epoch_two(proc, sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stderr[-2000:]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    name = signal.Signals(sig).name
    # Mid-epoch 2 as a rule; on a loaded machine the signal can still find the run saving
    # epoch 1 (after its line): then it stops after epoch 1, as exactly.
    match = re.fullmatch(
        rf"stopped by {name} (?:in epoch 2 after step (\d+) of {STEPS}|after epoch 1): "
        rf"checkpoint saved to \S+/stopped/checkpoint.pt; continue with --resume --run-id "
        rf"stopped .*",
        last,
    )
    assert match, last
    epoch, step = (2, int(match.group(1))) if match.group(1) else (1, 0)
    assert not (tmp_path / "stopped" / "metrics.json").exists()
    # Watchers see the run stopped, not one that still runs (or went silent).
    progress = json.loads((tmp_path / "stopped" / "progress.json").read_text())
    assert progress["state"] == "stopped"
    if epoch == 2:
        assert 0 < step < STEPS
        assert (progress["epoch"], progress["step"]) == (2, step)

    _resume(run_cli, digits_dir, tmp_path, "stopped", step, epoch)
    # Bit-identical to the run nobody interrupted: every loss, accuracy and rate.
    assert learning_curve(tmp_path / "stopped") == learning_curve(reference)
    assert metrics(tmp_path / "stopped")["best_val_acc"] == metrics(reference)["best_val_acc"]


def test_sigusr1_checkpoints_and_goes_on(
    reference: Path, tmp_path: Path, digits_dir: Path, run_cli: RunCli
) -> None:
    proc = _train(digits_dir, tmp_path, "spot")
    _signal_in_epoch_two(proc, signal.SIGUSR1)
    assert proc.stdout is not None
    line = next((line for line in proc.stdout if line.startswith("checkpoint saved")), "")
    assert line, "no 'checkpoint saved' line after SIGUSR1"
    step = int(re.search(r"after step (\d+) of", line).group(1))  # type: ignore[union-attr]
    proc.kill()  # then the machine goes away without another word (a spot reclaim)
    proc.communicate(timeout=60)
    assert 0 < step < STEPS, line

    _resume(run_cli, digits_dir, tmp_path, "spot", step)
    assert learning_curve(tmp_path / "spot") == learning_curve(reference)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_during_evaluation_keeps_the_epoch_and_resume_is_exact(
    sig: int,
    reference: Path,
    tmp_path: Path,
    digits_dir: Path,
    run_cli: RunCli,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The signal lands while epoch 1 is evaluated, after its last step: the run saves (or
    has just saved) the finished epoch, and stops or goes on from there, exactly."""
    import os

    import torch
    from transfer_learning import cli
    from transfer_learning.precision import mixed_precision
    from transfer_learning.trainer import Trainer

    evaluate = Trainer.evaluate
    calls = []

    def evaluate_then_signal(self: Trainer) -> tuple[float, float, list[int], list[int]]:
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), sig)  # the handler only sets a flag; evaluation finishes
        return evaluate(self)

    monkeypatch.setattr(Trainer, "evaluate", evaluate_then_signal)
    command = ["train", "--data", str(digits_dir), "--output-dir", str(tmp_path)]
    rc = cli.main([*command, "--run-id", "evaluated", *ARGS])
    out, err = capsys.readouterr()
    run_dir = tmp_path / "evaluated"
    if sig == signal.SIGUSR1:
        assert rc == 0, err[-2000:]
        assert f"checkpoint saved after epoch 1 (SIGUSR1): {run_dir}/checkpoint.pt" in out
        assert learning_curve(run_dir) == learning_curve(reference)
        # The record says which arithmetic the run used: this CPU's choice.
        chosen = mixed_precision(torch.device("cpu")) or torch.float32
        assert metrics(run_dir)["precision"] == str(chosen).removeprefix("torch.")
        return
    assert rc == 128 + sig, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"stopped by SIGTERM after epoch 1: checkpoint saved to {run_dir}/")
    assert not (run_dir / "metrics.json").exists()
    progress = json.loads((run_dir / "progress.json").read_text())
    assert progress["state"] == "stopped"

    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    assert cli.main([*command, *ARGS, "--resume"]) == 0
    out, _ = capsys.readouterr()
    assert "run evaluated" in out and "resuming after epoch 1" in out
    assert learning_curve(run_dir) == learning_curve(reference)
