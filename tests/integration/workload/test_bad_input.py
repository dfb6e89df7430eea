"""Each bad input from the issue: one line on stderr, exit code 2, never a traceback."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transfer_learning.cli import main

from tests.integration.workload.conftest import TINY, RunCli


def _copy(digits_dir: Path, tmp: Path, classes: tuple[str, ...] = ("0", "1")) -> Path:
    root = tmp / "data"
    for split in ("train", "val"):
        for name in classes:
            shutil.copytree(digits_dir / split / name, root / split / name)
    return root


def _missing_root(d: Path, tmp: Path) -> list[str]:
    return ["--data", str(tmp / "nowhere")]


def _missing_train(d: Path, tmp: Path) -> list[str]:
    root = _copy(d, tmp)
    shutil.rmtree(root / "train")
    return ["--data", str(root)]


def _missing_val(d: Path, tmp: Path) -> list[str]:
    root = _copy(d, tmp)
    shutil.rmtree(root / "val")
    return ["--data", str(root)]


def _empty_class(d: Path, tmp: Path) -> list[str]:
    root = _copy(d, tmp)
    (root / "train" / "7").mkdir()
    return ["--data", str(root)]


def _only_junk_class(d: Path, tmp: Path) -> list[str]:
    root = _copy(d, tmp)
    (root / "train" / "7").mkdir()
    (root / "train" / "7" / "a.png").write_bytes(b"garbage")
    shutil.copytree(root / "val" / "0", root / "val" / "7")
    return ["--data", str(root)]


def _one_class(d: Path, tmp: Path) -> list[str]:
    return ["--data", str(_copy(d, tmp, ("3",)))]


def _unknown_weights(d: Path, tmp: Path) -> list[str]:
    return ["--data", str(_copy(d, tmp)), "--weights", "imagenet22k"]


def _unreadable_weights(d: Path, tmp: Path) -> list[str]:
    (tmp / "w.pth").write_text("not torch")
    return ["--data", str(_copy(d, tmp)), "--weights", str(tmp / "w.pth")]


def _unreadable_checkpoint(d: Path, tmp: Path) -> list[str]:
    (tmp / "out" / "r1").mkdir(parents=True)
    (tmp / "out" / "r1" / "checkpoint.pt").write_bytes(b"\x80\x02 torn write")
    return ["--data", str(_copy(d, tmp)), "--resume", "--run-id", "r1"]


def _resume_without_checkpoint(d: Path, tmp: Path) -> list[str]:
    return ["--data", str(_copy(d, tmp)), "--resume"]


def _root_is_a_file(d: Path, tmp: Path) -> list[str]:
    (tmp / "data.zip").write_bytes(b"PK")
    return ["--data", str(tmp / "data.zip")]


def _val_class_missing(d: Path, tmp: Path) -> list[str]:
    root = _copy(d, tmp, ("0", "1", "2"))
    shutil.rmtree(root / "val" / "2")
    return ["--data", str(root)]


def _output_dir_is_a_file(d: Path, tmp: Path) -> list[str]:
    (tmp / "results").write_text("a file")
    return ["--data", str(_copy(d, tmp)), "--output-dir", str(tmp / "results")]


def _negative_gamma(d: Path, tmp: Path) -> list[str]:
    return ["--data", str(_copy(d, tmp)), "--gamma", "-5"]


def _fake_checkpoint(tmp: Path, classes: list[str], data_root: Path) -> None:
    (tmp / "out" / "r1").mkdir(parents=True)
    blob = {"model": {}, "optimizer": {}, "epoch": 1, "classes": classes}
    torch.save(
        {**blob, "data_root": str(data_root.resolve())}, tmp / "out" / "r1" / "checkpoint.pt"
    )


def _resume_other_classes(d: Path, tmp: Path) -> list[str]:
    root = _copy(d, tmp)
    _fake_checkpoint(tmp, ["0", "1", "2"], root)
    return ["--data", str(root), "--resume"]


def _resume_other_root(d: Path, tmp: Path) -> list[str]:
    root = _copy(d, tmp)
    _fake_checkpoint(tmp, ["0", "1"], tmp / "elsewhere")
    return ["--data", str(root), "--resume"]


def _limit_below_classes(d: Path, tmp: Path) -> list[str]:
    return ["--data", str(_copy(d, tmp, ("0", "1", "2"))), "--limit", "2"]


def _cuda_without_gpu(d: Path, tmp: Path) -> list[str]:
    return ["--data", str(_copy(d, tmp)), "--device", "cuda"]


CASES: dict[str, tuple[Callable[[Path, Path], list[str]], str]] = {
    "missing-root": (_missing_root, "does not exist"),
    "missing-train": (_missing_train, "has no train/ directory"),
    "missing-val": (_missing_val, "has no val/ directory"),
    "class-without-images": (_empty_class, "class '7' has no images"),
    "class-with-only-junk": (_only_junk_class, "class '7' has no readable images"),
    "only-one-class": (_one_class, "at least two"),
    "unknown-weights": (_unknown_weights, "unknown --weights 'imagenet22k'"),
    "unreadable-weights": (_unreadable_weights, "cannot read weights file"),
    "unreadable-checkpoint": (_unreadable_checkpoint, "cannot read checkpoint"),
    "resume-without-checkpoint": (_resume_without_checkpoint, "no checkpoint.pt"),
    "cuda-without-gpu": (_cuda_without_gpu, "--device cuda was asked for but no CUDA device"),
    "data-root-is-a-file": (_root_is_a_file, "is a file, not a directory: pass --data DIR"),
    "val-class-missing": (_val_class_missing, "val has no directory for class(es) 2"),
    "output-dir-is-a-file": (_output_dir_is_a_file, "is a file, not a directory"),
    "negative-gamma": (_negative_gamma, "--gamma must be in (0, 1]"),
    "limit-below-classes": (_limit_below_classes, "--limit 2 is smaller than the 3 classes"),
    "resume-other-classes": (_resume_other_classes, "trained on classes ['0', '1', '2']"),
    "resume-other-data-root": (_resume_other_root, "elsewhere, not"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_line(
    case: str, tmp_path: Path, digits_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, expected = CASES[case]
    if case == "cuda-without-gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    argv = [
        "train",
        "--output-dir",
        str(tmp_path / "out"),
        *TINY,
        "--epochs",
        "1",
        *make(digits_dir, tmp_path),
    ]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert not list((tmp_path / "out").glob("*/metrics.json"))


def test_unreadable_model_file_for_evaluate(
    tmp_path: Path, digits_dir: Path, run_cli: RunCli
) -> None:
    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04 half a zip")
    result = run_cli("evaluate", "--model", str(tmp_path / "model.pt"), "--data", str(digits_dir))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: cannot read model file")
