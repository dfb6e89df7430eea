"""run_progress: the epoch lines and the poll loop, with the host, clock and screen mocked."""

from __future__ import annotations

from typing import Any

import pytest
from ansible_collections.wyvern.workbench.plugins.action import run_progress as action


def _record(**fields: Any) -> dict[str, Any]:
    base = {
        "run_id": "finetune-abc",
        "state": "running",
        "pid": 42,
        "updated_at": 1.0,
        "epoch": None,
        "epochs": 3,
        "step": None,
        "steps_per_epoch": None,
        "loss": None,
        "train_acc": None,
        "val_acc": None,
        "images_per_s": None,
        "eta_s": None,
    }
    return {**base, **fields}


EPOCH_1 = _record(
    epoch=1,
    step=10,
    steps_per_epoch=10,
    loss=0.42114,
    train_acc=0.8731,
    val_acc=0.9012,
    images_per_s=412.34,
    eta_s=65.2,
)


def test_the_epoch_line_says_epoch_loss_accuracy_rate_and_eta() -> None:
    assert action.epoch_line(EPOCH_1) == (
        "epoch 1/3: loss 0.4211, train acc 0.873, val acc 0.901, 412.3 images/s, ETA 1m05s"
    )
    # Unknown values are a `?`, never a crash; a long ETA reads in hours.
    line = action.epoch_line(_record(epoch=2, step=0, steps_per_epoch=5, eta_s=7300))
    assert line == "epoch 1/3: loss ?, train acc ?, val acc ?, ? images/s, ETA 2h01m"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, 0),  # loading the data
        ({"epoch": 1, "step": 3, "steps_per_epoch": 10}, 0),  # inside epoch 1
        ({"epoch": 1, "step": 10, "steps_per_epoch": 10}, 1),  # epoch 1 done
        ({"epoch": 2, "step": 0, "steps_per_epoch": 10}, 1),  # epoch 2 begun
        ({"epoch": 3, "step": 2, "steps_per_epoch": 10, "state": "done"}, 3),
    ],
)
def test_completed_epoch(fields: dict[str, Any], expected: int) -> None:
    assert action.completed_epoch(_record(**fields)) == expected


class Host:
    """A run on a host: the progress records and job states it shows, one per look."""

    def __init__(self, records: list[dict | None], jobs: list[dict]) -> None:
        self.records, self.jobs = records, jobs
        self.now = 0.0
        self.sleeps: list[float] = []

    def job(self) -> dict:
        return self.jobs.pop(0) if len(self.jobs) > 1 else self.jobs[0]

    def record(self) -> dict | None:
        return self.records.pop(0) if len(self.records) > 1 else self.records[0]

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _poller(host: Host, shown: list[str], **kwargs: Any) -> Any:
    return action.Poller(
        job_status=host.job,
        read_progress=host.record,
        show=shown.append,
        clock=lambda: host.now,
        sleep=host.sleep,
        **kwargs,
    )


RUNNING = {"started": True, "finished": False}
DONE = {"started": True, "finished": True, "rc": 0, "stdout": "", "stderr": ""}


def test_one_line_per_epoch_until_the_job_ends() -> None:
    epoch_2 = {**EPOCH_1, "epoch": 2, "loss": 0.3, "eta_s": 30.0}
    final = {**EPOCH_1, "epoch": 3, "loss": 0.2, "state": "done", "eta_s": 0.0}
    host = Host(
        records=[
            None,  # papermill has not started the kernel yet
            _record(state="starting"),
            _record(epoch=1, step=4, steps_per_epoch=10),
            EPOCH_1,
            EPOCH_1,  # the same record twice: no second line
            epoch_2,
            final,
        ],
        jobs=[RUNNING] * 6 + [DONE],
    )
    shown: list[str] = []
    job, record = _poller(host, shown, interval=2).run()
    assert job is DONE and record == final
    assert shown == [
        "run finetune-abc started: 3 epoch(s) to train (process 42)",
        action.epoch_line(EPOCH_1),
        action.epoch_line(epoch_2),
        action.epoch_line(final),
    ]
    assert shown[-1].startswith("epoch 3/3: loss 0.2000") and shown[-1].endswith("ETA 0s")
    assert host.sleeps == [2] * 6


def test_a_minute_without_an_epoch_prints_a_heartbeat() -> None:
    slow = _record(epoch=1, step=7, steps_per_epoch=100, images_per_s=3.0, eta_s=4000)
    host = Host(records=[slow], jobs=[RUNNING] * 15 + [DONE])
    shown: list[str] = []
    _poller(host, shown, interval=5).run()
    beats = [line for line in shown if line.startswith("epoch 1/3: step 7/100")]
    assert beats and len(beats) == 1  # 75 s: one heartbeat, not one per look
    assert "3.0 images/s, ETA 1h06m" in beats[0]


def test_the_heartbeat_after_the_last_epoch_says_the_notebook_is_finishing() -> None:
    final = {**EPOCH_1, "epoch": 3}
    assert action.heartbeat_line(final, 75) == (
        "training done; the notebook's last cells are running (1m15s)"
    )
    loading = _record(state="starting")
    assert action.heartbeat_line(loading, 61) == "run finetune-abc: loading the data (1m01s)"
    assert action.heartbeat_line(None, 5) == "waiting for the run to start (5s)"


def test_a_run_that_outlives_its_timeout_stops_the_loop() -> None:
    host = Host(records=[None], jobs=[RUNNING])
    with pytest.raises(TimeoutError, match="longer than 10 s"):
        _poller(host, [], interval=5, timeout=10).run()
    assert host.now <= 10 + action.GRACE_S + 5


def test_a_failed_notebook_fails_the_task_with_papermill_s_error_tail() -> None:
    stderr = "\n".join(f"log line {i}" for i in range(40)) + "\nValueError: no train/ in /data\n"
    job = {"finished": True, "rc": 1, "stdout": "", "stderr": stderr}
    record = _record(state="failed")
    result = action.summarise(job, record, [], tail_lines=5)
    assert result["failed"] is True
    assert result["error_tail"][-1] == "ValueError: no train/ in /data"
    assert len(result["error_tail"]) == 5
    assert "training state failed" in result["msg"]
    assert result["msg"].endswith("ValueError: no train/ in /data")


def test_a_training_stopped_by_a_signal_says_how_to_continue_it() -> None:
    job = {"finished": True, "rc": 1, "stdout": "", "stderr": "Interrupted: stopped by SIGTERM\n"}
    result = action.summarise(job, _record(state="stopped", epoch=2, step=7), [], tail_lines=5)
    assert result["failed"] is True and result["interrupted"] is True
    assert result["msg"].startswith("The training was stopped in epoch 2 at step 7")
    assert "run playbooks/run.yml again with the same settings to continue it" in result["msg"]
    evaluating = _record(state="stopped", epoch=2, step=20, steps_per_epoch=20)
    after = action.summarise(job, evaluating, [], tail_lines=5)
    assert after["msg"].startswith("The training was stopped after epoch 2 (by a signal")
    early = action.summarise(job, _record(state="stopped"), [], tail_lines=5)
    assert "stopped before training started" in early["msg"]


def test_a_finished_run_summarises_its_last_epoch() -> None:
    final = {**EPOCH_1, "epoch": 3, "state": "done"}
    result = action.summarise(DONE, final, ["a line"], tail_lines=5)
    assert "failed" not in result and result["changed"] is True
    assert result["msg"].startswith("The notebook finished: epoch 3/3")
    assert result["progress"] == final and result["lines"] == ["a line"]


# -- a distributed run: every node's job ------------------------------------------------------


def test_a_failed_node_fails_the_run_at_once_naming_it() -> None:
    running = {"finished": False}
    failed = {"finished": True, "failed": True, "rc": 1}
    combined = action.combine_jobs([("node 0", running), ("node 1", failed)])
    assert combined["finished"] and combined["node"] == "node 1" and combined["rc"] == 1
    assert combined["failed_nodes"] == ["node 1"]
    both = action.combine_jobs([("node 0", {"finished": True, "rc": 1}), ("node 1", failed)])
    assert both["failed_nodes"] == ["node 0", "node 1"]


def test_the_run_is_done_when_every_node_is() -> None:
    ok = {"finished": True, "rc": 0}
    assert action.combine_jobs([("node 0", ok), ("node 1", {"finished": False})]) == {
        "finished": False
    }
    done = action.combine_jobs([("node 0", ok), ("node 1", ok)])
    assert done["finished"] and done["node"] == "node 0" and done["rc"] == 0
    # Node 0 failing is reported as node 0, even while the others still run.
    assert (
        action.combine_jobs(
            [("node 0", {"finished": True, "rc": 2}), ("node 1", {"finished": False})]
        )["node"]
        == "node 0"
    )
