"""A killed training process takes its data-loading workers with it.

The OOM killer (or any SIGKILL) ends the trainer without a word; its decode workers, each
blocked on a full result pipe, used to live on for ever: holding their memory inside the
container's limit and the run's output pipes, so whatever waited for the run's output hung
(seen in scripts/bench_streaming.py's in-memory run under a 1.5 GiB limit: two orphaned
workers of ~400 MB each, still there after 5 minutes).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.workload.conftest import _env

# Decode at 224 px (150 KB an image, 2.4 MB a batch of 16: far more than a pipe holds), take
# one image, then stop reading: the workers fill their pipes and block, as when the
# trainer is killed mid-decode.
SCRIPT = """
import sys, time
from pathlib import Path
from transfer_learning.data import Split, decoded
paths = sorted(Path(sys.argv[1]).rglob("*.png"))
images = decoded(Split(paths, [0] * len(paths)), 224, 2)
next(images)
print("decoding", flush=True)
time.sleep(600)
"""


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_killing_the_trainer_ends_its_loader_workers(digits_dir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(digits_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(None),
    )
    workers: list[int] = []
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "decoding", proc.stderr.read()  # type: ignore[union-attr]
        time.sleep(1)  # the workers decode ahead and block on their pipes
        workers = _children(proc.pid)
        assert len(workers) == 2, workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), "loader workers outlived the killed trainer"
        # Nothing holds the output pipes any more: reading them ends.
        proc.communicate(timeout=10)
    finally:
        for pid in [proc.pid, *workers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
