"""The same `train` under torchrun: two CPU processes with gloo, only rank 0 writes."""

from __future__ import annotations

from pathlib import Path

from tests.integration.workload.conftest import TINY, RunCli, metrics


def test_two_process_gloo_run(tmp_path: Path, digits_dir: Path, run_cli: RunCli) -> None:
    out = tmp_path / "out"
    result = run_cli(
        "--standalone",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "-m",
        "transfer_learning",
        "train",
        "--data",
        str(digits_dir),
        "--output-dir",
        str(out),
        *TINY,
        "--epochs",
        "2",
        "--limit",
        "64",
        module=["-m", "torch.distributed.run"],
        env={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # One run directory, one set of outputs, one log: rank 1 trained but wrote nothing.
    (run_dir,) = list(out.iterdir())
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        [
            "checkpoint.pt",
            "confusion.png",
            "curves.png",
            "environment.json",
            "history.csv",
            "metrics.json",
            "model.pt",
        ]
    )
    assert result.stdout.count("epoch 2/2") == 1
    m = metrics(run_dir)
    assert m["world_size"] == 2
    assert m["num_val"] == 64
    assert len(m["epochs"]) == 2
    # Each rank trained on half of the 64 images; the metrics add both halves.
    assert m["epochs"][0]["train_loss"] > 0
