"""progress.json: the contract with the run role's live lines and the idle auto-stop agent."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest
from transfer_learning.errors import Interrupted, WorkloadError
from transfer_learning.progress import FIELDS, Progress, final_state, read


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _record(run_dir: Path) -> dict:
    return json.loads((run_dir / "progress.json").read_text())


def test_every_key_of_the_contract_is_written_nulls_where_unknown(tmp_path: Path) -> None:
    clock = Clock()
    progress = Progress(tmp_path, "run-1", epochs=3, clock=clock)
    progress.write()
    record = _record(tmp_path)
    assert list(record) == list(FIELDS)
    assert record["run_id"] == "run-1" and record["state"] == "starting"
    assert record["pid"] == os.getpid() and record["updated_at"] == 1000.0
    assert record["epochs"] == 3
    unknown = ("epoch", "step", "steps_per_epoch", "loss", "train_acc", "val_acc")
    assert all(record[key] is None for key in (*unknown, "images_per_s", "eta_s"))


def test_epochs_steps_and_eta(tmp_path: Path) -> None:
    clock = Clock()
    progress = Progress(tmp_path, "r", epochs=3, clock=clock)
    progress.epoch_started(1, steps_per_epoch=10)
    clock.now += 5
    progress.step_done(5, images=160)  # half an epoch in 5 s: 10 s an epoch
    snap = progress.snapshot()
    assert (snap["state"], snap["epoch"], snap["step"]) == ("running", 1, 5)
    assert snap["images_per_s"] == 32.0
    assert snap["eta_s"] == pytest.approx(25.0)  # 5 s of this epoch, 2 more of 10 s
    clock.now += 5
    progress.step_done(10, images=320)  # the last step: the evaluation is still to come
    assert progress.snapshot()["step"] == 9  # not yet the end a reader looks for
    clock.now += 2  # the epoch took 12 s with its evaluation
    progress.epoch_done(
        {"epoch": 1, "train_loss": 1.5, "train_acc": 0.4, "val_acc": 0.5, "images_per_s": 30.0}
    )
    record = _record(tmp_path)  # written at once at the epoch's end
    assert (record["epoch"], record["step"], record["loss"], record["val_acc"]) == (1, 10, 1.5, 0.5)
    assert record["eta_s"] == pytest.approx(24.0)  # two epochs of 12 s left
    progress.epoch_started(2, steps_per_epoch=10)
    clock.now += 3
    assert progress.snapshot()["eta_s"] == pytest.approx(21.0)


def test_a_nan_loss_is_written_as_null_json_has_no_nan(tmp_path: Path) -> None:
    progress = Progress(tmp_path, "r", epochs=1, clock=Clock())
    progress.epoch_started(1, 4)
    progress.epoch_done({"epoch": 1, "train_loss": math.nan, "train_acc": 0.1, "val_acc": 0.1})
    text = (tmp_path / "progress.json").read_text()
    assert "NaN" not in text and json.loads(text)["loss"] is None


def test_the_heartbeat_refreshes_the_file_and_finish_writes_the_final_state(
    tmp_path: Path,
) -> None:
    progress = Progress(tmp_path, "r", epochs=2, interval=0.05).start()
    first = _record(tmp_path)["updated_at"]
    time.sleep(0.3)
    assert _record(tmp_path)["updated_at"] > first  # nothing else wrote: the heartbeat did
    progress.finish("stopped")
    final = _record(tmp_path)
    assert final["state"] == "stopped" and final["eta_s"] is None
    time.sleep(0.15)
    assert _record(tmp_path) == final  # the heartbeat is gone with the run
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_final_state_of_each_ending() -> None:
    assert final_state(None) == "done"
    assert final_state(Interrupted("stopped by SIGTERM", 15)) == "stopped"
    assert final_state(KeyboardInterrupt()) == "stopped"
    assert final_state(WorkloadError("bad data")) == "failed"
    assert final_state(RuntimeError("CUDA error")) == "failed"


def test_unknown_fields_and_states_are_refused(tmp_path: Path) -> None:
    progress = Progress(tmp_path, "r", epochs=1)
    with pytest.raises(KeyError):
        progress.update(accuracy=1.0)
    with pytest.raises(ValueError, match="not a progress state"):
        progress.update(state="paused")


def test_a_missing_directory_does_not_stop_the_training(tmp_path: Path) -> None:
    Progress(tmp_path / "gone", "r", epochs=1).write()  # no exception
    assert read(tmp_path / "gone") is None
