"""Argument parsing: usage errors are one line and exit code 2; the notebook's contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transfer_learning.cli import build_parser, main

NOTEBOOK = (
    Path(__file__).resolve().parents[3] / "workload" / "notebooks" / "transfer_learning.ipynb"
)


@pytest.mark.parametrize(
    "argv",
    [
        ["train"],
        ["train", "--data", "d", "--epochs", "0"],
        ["train", "--data", "d", "--mode", "linear"],
        ["train", "--data", "d", "--device", "tpu"],
        ["make-dataset", "mnist", "d"],
        ["frobnicate"],
    ],
)
def test_usage_errors_are_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert err.count("\n") == 1


def test_train_defaults_match_the_tutorial() -> None:
    args = build_parser().parse_args(["train", "--data", "d"])
    assert (args.weights, args.mode, args.image_size, args.device) == (
        "imagenet",
        "finetune",
        224,
        "auto",
    )
    assert args.run_id is None


def test_notebook_parameters_cell_and_empty_outputs() -> None:
    nb = json.loads(NOTEBOOK.read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1
    source = "".join(tagged[0]["source"])
    for name in (
        "data_dir",
        "output_dir",
        "run_id",
        "epochs",
        "image_size",
        "limit",
        "batch_size",
        "weights",
        "mode",
        "device",
        "seed",
    ):
        assert f"\n{name} = " in f"\n{source}", name
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == []
            assert cell["execution_count"] is None
    code = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "import transfer_learning" in code
    assert "def " not in code and "optimizer" not in code  # no second copy of the logic


def test_check_data_prints_the_digest_or_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np
    from PIL import Image

    for split in ("train", "val"):
        for name in ("a", "b"):
            (tmp_path / "d" / split / name).mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(
                tmp_path / "d" / split / name / "0.png"
            )
    assert main(["check-data", str(tmp_path / "d"), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["classes"] == ["a", "b"] and len(found["digest"]) == 64
    assert main(["check-data", str(tmp_path / "nope")]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: data root") and "does not exist" in err and "\n" not in err
