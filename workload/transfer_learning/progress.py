"""`progress.json` in the run's directory: where a running training is, for whoever watches.

The file is a contract with the control node (the `run` role prints one line per epoch from
it) and with the idle auto-stop agent (a run is active while `state` is `starting` or
`running` and `updated_at` is recent). It is replaced atomically (a temporary file, then
`os.replace`), refreshed by a heartbeat thread at least every `interval` seconds while the
run lives (data decoding included), at every epoch end, and gets its final state on exit.

Keys: run_id, state (starting|running|done|failed|stopped), pid, updated_at (Unix time),
epoch, epochs, step, steps_per_epoch, loss, train_acc, val_acc, images_per_s, eta_s; null
where not known yet. `epoch` is the epoch under way (1-based); `step` reaches
`steps_per_epoch` when that epoch is over, evaluation included; loss and accuracies are
those of the last finished epoch.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transfer_learning.errors import Interrupted

FILENAME = "progress.json"
STATES = ("starting", "running", "done", "failed", "stopped")
FIELDS = (
    "run_id",
    "state",
    "pid",
    "updated_at",
    "epoch",
    "epochs",
    "step",
    "steps_per_epoch",
    "loss",
    "train_acc",
    "val_acc",
    "images_per_s",
    "eta_s",
)
# The heartbeat: well under the 10 s that a reader may take as "still alive".
INTERVAL_S = 5.0


def _number(value: Any) -> float | None:
    """A finite float, or None (JSON has no NaN)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class Progress:
    """The run's progress record, written to `<run_dir>/progress.json`.

    `update()` changes fields in memory (cheap: the training loop calls it every step);
    `write()` replaces the file; the heartbeat thread started by `start()` writes every
    `interval` seconds; `finish(state)` writes the final state and stops the thread.
    """

    def __init__(
        self,
        run_dir: Path,
        run_id: str,
        epochs: int,
        interval: float = INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(run_dir) / FILENAME
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.fields: dict[str, Any] = dict.fromkeys(FIELDS)
        self.fields.update(run_id=run_id, state="starting", pid=os.getpid(), epochs=int(epochs))
        # Epoch timing for the ETA: when the current epoch started and the finished ones' times.
        self._epoch_started: float | None = None
        self._epoch_times: list[float] = []

    # -- the record ------------------------------------------------------------------------

    def update(self, **fields: Any) -> None:
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise KeyError(f"not a progress field: {sorted(unknown)}")
        if "state" in fields and fields["state"] not in STATES:
            raise ValueError(f"not a progress state: {fields['state']!r}")
        with self._lock:
            self.fields.update(fields)

    def snapshot(self) -> dict[str, Any]:
        """The record as written: numbers finite or None, `eta_s` from the epoch times."""
        with self._lock:
            record = dict(self.fields)
        now = self.clock()
        record["updated_at"] = now
        record["eta_s"] = self.eta(now) if record["state"] in ("starting", "running") else None
        if record["state"] == "done":
            record["eta_s"] = 0.0
        for key in ("loss", "train_acc", "val_acc", "images_per_s", "eta_s"):
            record[key] = _number(record[key])
        return record

    def eta(self, now: float) -> float | None:
        """Seconds left: the mean finished epoch's time for each epoch still to run, less what
        the current one has taken; within the first epoch, its step rate; else unknown."""
        epochs, epoch = self.fields["epochs"], self.fields["epoch"]
        step, steps = self.fields["step"], self.fields["steps_per_epoch"]
        if not epochs or epoch is None or self._epoch_started is None:
            return None
        elapsed = max(0.0, now - self._epoch_started)
        if self._epoch_times:
            per_epoch = sum(self._epoch_times) / len(self._epoch_times)
        elif step and steps:
            per_epoch = elapsed * steps / step
        else:
            return None
        if step and steps and step >= steps:  # epoch `epoch` is done, the next not begun
            return max(0.0, per_epoch * (epochs - epoch))
        # `epoch` (1-based) is under way: its rest, and each epoch after it.
        return max(0.0, per_epoch * (epochs - epoch + 1) - elapsed)

    def write(self) -> None:
        """Replace the file atomically; a reader sees the old record or the new one."""
        record = self.snapshot()
        tmp = self.path.with_name(f".{FILENAME}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(record) + "\n")
            os.replace(tmp, self.path)
        except OSError:
            # Progress is for watchers: a full disk or a removed directory must not stop
            # the training itself.
            with contextlib.suppress(OSError):
                tmp.unlink()

    # -- the training's milestones ---------------------------------------------------------

    def epoch_started(self, epoch: int, steps_per_epoch: int, step: int = 0) -> None:
        """Epoch `epoch` (1-based) begins at `step` (non-zero when resuming mid-epoch)."""
        self._epoch_started = self.clock()
        self.update(state="running", epoch=epoch, steps_per_epoch=steps_per_epoch, step=step)

    def step_done(self, step: int, images: int) -> None:
        """After each optimizer step: where the epoch is and its rate so far (no write).

        `step` reaches `steps_per_epoch` only when `epoch_done` records the epoch's end
        (after its evaluation): a reader takes step == steps_per_epoch for a finished epoch.
        """
        started = self._epoch_started
        elapsed = self.clock() - started if started is not None else 0.0
        steps = self.fields["steps_per_epoch"]
        fields: dict[str, Any] = {"step": min(step, steps - 1) if steps else step}
        if elapsed > 0 and images:
            fields["images_per_s"] = images / elapsed
        self.update(**fields)

    def epoch_done(self, row: dict[str, Any]) -> None:
        """At an epoch's end (a row of the run's history): record it and write at once."""
        if self._epoch_started is not None:
            self._epoch_times.append(self.clock() - self._epoch_started)
        self.update(
            epoch=int(row["epoch"]),
            step=self.fields["steps_per_epoch"],
            loss=row.get("train_loss"),
            train_acc=row.get("train_acc"),
            val_acc=row.get("val_acc"),
            images_per_s=row.get("images_per_s"),
        )
        self._epoch_started = self.clock()
        self.write()

    # -- the heartbeat ---------------------------------------------------------------------

    def start(self) -> Progress:
        self.write()
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="progress", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            self.write()

    def finish(self, state: str) -> None:
        """The final state (done, failed or stopped), written after the heartbeat stops."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.update(state=state)
        self.write()


def final_state(exc: BaseException | None) -> str:
    """done without an exception; stopped for a signal or Ctrl-C; failed otherwise."""
    if exc is None:
        return "done"
    if isinstance(exc, Interrupted | KeyboardInterrupt):
        return "stopped"
    return "failed"


def read(run_dir: Path) -> dict[str, Any] | None:
    """The run's last record, or None when it has none (or a torn one: never, by design)."""
    try:
        return json.loads((Path(run_dir) / FILENAME).read_text())
    except (OSError, ValueError):
        return None
