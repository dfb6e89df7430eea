"""The notebook runs headless with nbclient and injected parameters, like papermill does."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.integration.workload.conftest import RUN_OUTPUTS, WORKLOAD

NOTEBOOK = (
    Path(__file__).resolve().parents[3] / "workload" / "notebooks" / "transfer_learning.ipynb"
)


def test_notebook_executes_and_writes_outputs(
    tmp_path: Path, digits_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", WORKLOAD)  # the kernel imports this checkout's package
    nb = nbformat.read(NOTEBOOK, as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    overrides = {
        "data_dir": str(digits_dir),
        "output_dir": str(tmp_path / "outputs"),
        "run_id": "nb",
        "epochs": 2,
        "image_size": 32,
        "limit": 64,
        "batch_size": 16,
        "workers": 0,
        "weights": "none",
        "mode": "feature-extract",
        "device": "cpu",
        "seed": 0,
    }
    injected = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in overrides.items()))
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, injected)

    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    run_dir = tmp_path / "outputs" / "nb"
    for name in (*RUN_OUTPUTS, "predictions.png"):
        assert (run_dir / name).is_file(), name
    m = json.loads((run_dir / "metrics.json").read_text())
    assert len(m["epochs"]) == 2 and m["mode"] == "feature-extract"
    images = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert len(images) >= 3  # curves, confusion matrix, prediction grid
