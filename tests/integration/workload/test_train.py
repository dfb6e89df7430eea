"""`train` and `evaluate` end to end on the digits data set: learning, outputs, seeds, resume."""

from __future__ import annotations

import csv
import hashlib
import json
import socket
import subprocess
from pathlib import Path

import pytest
from PIL import Image
from transfer_learning.cli import main

from tests.integration.workload.conftest import (
    RUN_OUTPUTS,
    TINY,
    RunCli,
    learning_curve,
    metrics,
)

FINETUNE = [*TINY, "--seed", "1", "--step-size", "2"]
OUTPUTS = (*RUN_OUTPUTS, "checkpoint.pt")


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, digits_dir: Path, run_cli: RunCli) -> Path:
    """Finetune runs shared by the tests below: 4 epochs straight; 2 epochs, then resume to 4."""
    out = tmp_path_factory.mktemp("runs")
    base = ["train", "--data", str(digits_dir), "--output-dir", str(out), *FINETUNE]
    _ok(run_cli(*base, "--run-id", "four", "--epochs", "4"))
    _ok(run_cli(*base, "--run-id", "resumed", "--epochs", "2"))
    # Keep the first half's record: the resumed run rewrites metrics.json.
    (out / "two.json").write_text((out / "resumed" / "metrics.json").read_text())
    resumed = _ok(run_cli(*base, "--run-id", "resumed", "--epochs", "4", "--resume"))
    assert "resuming after epoch 2" in resumed.stdout
    # Two epochs with StepLR(7), resumed with --step-size 2: from then on, the step-2 schedule.
    _ok(run_cli(*base, "--run-id", "restep", "--epochs", "2", "--step-size", "7"))
    restep = _ok(run_cli(*base, "--run-id", "restep", "--epochs", "4", "--resume"))
    assert "--step-size 2 --gamma 0.1 replace the checkpoint's 7 and 0.1" in restep.stdout
    return out


def test_feature_extract_learns_digits(tmp_path: Path, digits_dir: Path, run_cli: RunCli) -> None:
    result = _ok(
        run_cli(
            "train",
            "--data",
            str(digits_dir),
            "--output-dir",
            str(tmp_path),
            "--run-id",
            "fx",
            "--weights",
            "none",
            "--mode",
            "feature-extract",
            "--image-size",
            "32",
            "--limit",
            "300",
            "--epochs",
            "6",
            "--lr",
            "0.02",
            "--workers",
            "2",
            "--device",
            "cpu",
        )
    )
    m = metrics(tmp_path / "fx")
    assert m["cached_features"] is True
    assert m["best_val_acc"] >= 0.5, result.stdout  # chance is 0.1
    assert "epoch 6/6" in result.stdout


def test_finetune_learns_and_writes_every_output(runs: Path) -> None:
    run_dir = runs / "four"
    for name in OUTPUTS:
        assert (run_dir / name).is_file(), name
    m = metrics(run_dir)
    # A tiny data set on any machine: the in-memory path, and the record says why.
    assert (
        m["data_store"]["kind"] == "memory" and "fits in half of the" in m["data_store"]["reason"]
    )
    assert m["best_val_acc"] >= 0.3  # well above the 0.1 of chance after four tiny epochs
    assert m["epochs"][-1]["train_loss"] < m["epochs"][0]["train_loss"]
    assert len(m["epochs"]) == 4 and m["num_train"] == 160 and m["num_val"] == 160
    assert m["images_per_s"] > 0 and m["wall_time_s"] > 0
    rows = list(csv.DictReader((run_dir / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    for png in ("curves.png", "confusion.png"):
        with Image.open(run_dir / png) as img:
            assert img.format == "PNG" and img.size[0] > 200
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["seed"] == 1 and env["arguments"]["epochs"] == 4
    assert env["arguments"]["weights"] == "none"
    assert env["image_id"] is None
    assert env["git_revision"] and len(env["git_revision"]) == 40
    lock = Path(__file__).resolve().parents[3] / "workload" / "requirements.lock"
    expected = hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else None
    assert env["lock_sha256"] == expected
    # The watchers' record (progress.json): the run's final state, all epochs done.
    progress = json.loads((run_dir / "progress.json").read_text())
    assert progress["state"] == "done" and progress["run_id"] == "four"
    assert (progress["epoch"], progress["epochs"]) == (4, 4)
    assert progress["step"] == progress["steps_per_epoch"] > 0
    assert progress["eta_s"] == 0.0 and progress["val_acc"] == m["epochs"][-1]["val_acc"]


def test_same_seed_same_metrics(runs: Path) -> None:
    # Two separate processes, same seed: the same numbers to the last bit.
    two = json.loads((runs / "two.json").read_text())["epochs"]
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
    assert [tuple(r[k] for k in keys) for r in two] == learning_curve(runs / "four")[:2]


def test_two_epochs_plus_resume_equals_four(runs: Path) -> None:
    full = learning_curve(runs / "four")
    assert learning_curve(runs / "resumed") == full
    assert full[2][4] == pytest.approx(full[0][4] * 0.1)  # the StepLR state came back too
    assert metrics(runs / "resumed")["best_val_acc"] == metrics(runs / "four")["best_val_acc"]


def test_step_size_given_on_resume_is_honoured(runs: Path) -> None:
    # Epochs 1-2 have the same rate under StepLR(7) and StepLR(2): the whole run must equal
    # the uninterrupted step-2 one, rates of epochs 3 and 4 included.
    assert learning_curve(runs / "restep") == learning_curve(runs / "four")


@pytest.mark.parametrize(
    "sizes", [("--limit", "17", "--batch-size", "16"), ("--limit", "10", "--batch-size", "1")]
)
def test_a_batch_of_one_image_trains(
    sizes: tuple[str, ...], tmp_path: Path, digits_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 32 px: resnet18's last BatchNorm sees 1x1 maps, so one image has one value per channel.
    args = ["train", "--data", str(digits_dir), "--output-dir", str(tmp_path), *TINY, *sizes]
    assert main([*args, "--epochs", "1", "--run-id", "one", "--mode", "finetune"]) == 0
    assert metrics(tmp_path / "one")["num_train"] == int(sizes[1])


def test_evaluate_reproduces_the_best_accuracy(
    runs: Path, digits_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(runs / "four" / "model.pt")
    sample = ["--limit", "160", "--seed", "1", "--workers", "0", "--device", "cpu"]
    assert main(["evaluate", "--model", model, "--data", str(digits_dir), *sample, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 160
    assert report["accuracy"] == pytest.approx(metrics(runs / "four")["best_val_acc"])


def _mixed_tree(root: Path) -> Path:
    """Two classes of grayscale, palette, RGBA and RGB images, one corrupt file, one text file."""
    for split, count in (("train", 4), ("val", 2)):
        for k, name in enumerate(("circle", "square")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, mode in zip(range(count), ("L", "P", "RGBA", "RGB"), strict=False):
                img = Image.new("RGB", (20, 20), (40 * i, 200 * k, 90))
                (img.quantize(4) if mode == "P" else img.convert(mode)).save(folder / f"{i}.png")
    (root / "train" / "circle" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "val" / "square" / "README.txt").write_text("not an image")
    return root


def test_image_modes_converted_and_junk_skipped(tmp_path: Path, run_cli: RunCli) -> None:
    data = _mixed_tree(tmp_path / "mixed")
    out = tmp_path / "out"
    args = ["--data", str(data), "--output-dir", str(out), *TINY, "--epochs", "1"]
    result = _ok(run_cli("train", *args, "--batch-size", "4"))
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert "skipped 2 file(s)" in warnings[0]
    # No --run-id: the run directory is named by a UTC timestamp.
    (run_dir,) = list(out.iterdir())
    assert run_dir.name[:8].isdigit() and run_dir.name[8] == "-"
    m = metrics(run_dir)
    assert (m["num_train"], m["num_val"], m["skipped_files"]) == (8, 4, 2)


def test_imagenet_offline_gives_the_fix(tmp_path: Path, digits_dir: Path, run_cli: RunCli) -> None:
    with socket.socket() as s:  # a loopback port nothing listens on: the network is "down"
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    env = {
        "TORCH_HOME": str(tmp_path / "torch"),
        "https_proxy": dead,
        "HTTPS_PROXY": dead,
        "http_proxy": dead,
        "HTTP_PROXY": dead,
        "no_proxy": "",
        "NO_PROXY": "",
    }
    result = run_cli(
        "train",
        "--data",
        str(digits_dir),
        "--output-dir",
        str(tmp_path / "out"),
        "--weights",
        "imagenet",
        "--epochs",
        "1",
        "--image-size",
        "32",
        "--limit",
        "20",
        "--workers",
        "0",
        env=env,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "ImageNet weights" in line and "--weights none" in line


def test_disk_store_trains_exactly_like_memory(tmp_path: Path, digits_dir: Path) -> None:
    # The streaming path (decoded images in a cache file, read per batch) gives the same
    # numbers as the in-memory path for the same seed, augmentation included.
    base = ["train", "--data", str(digits_dir), "--output-dir", str(tmp_path), *TINY]
    base += ["--limit", "48", "--epochs", "2", "--mode", "finetune"]
    cache = tmp_path / "cache"
    assert main([*base, "--run-id", "mem", "--data-store", "memory"]) == 0
    assert main([*base, "--run-id", "disk", "--data-store", "disk", "--cache-dir", str(cache)]) == 0
    assert learning_curve(tmp_path / "disk") == learning_curve(tmp_path / "mem")
    store = metrics(tmp_path / "disk")["data_store"]
    assert store["kind"] == "disk" and store["reason"].startswith("--data-store disk")
    assert len(list(cache.glob("*.u8"))) == 2  # train and val, built once
    assert metrics(tmp_path / "mem")["data_store"]["kind"] == "memory"
    env = json.loads((tmp_path / "disk" / "environment.json").read_text())
    assert env["data_store"]["kind"] == "disk"
