"""The agent's signal readers against fakes: progress files, an nvidia-smi script on PATH,
a proc tree, a Jupyter API; outputs not fetched; one tick end to end on files."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
from pathlib import Path

import pytest

from .autostop_support import load

agent, hard = load()
NOW = 1_800_000_000.0


def write_progress(home: Path, run: str, state: str, updated_at: float) -> Path:
    path = home / "outputs" / run / "progress.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"state": state, "updated_at": updated_at}))
    return path


# ---------------------------------------------------------------- runs


@pytest.mark.parametrize(
    ("state", "age", "expected"),
    [
        ("running", 5, "active"),
        ("starting", 100, "active"),
        ("running", 121, "idle"),  # heartbeat stopped: the run died
        ("done", 1, "idle"),
        ("failed", 1, "idle"),
        ("stopped", 1, "idle"),
    ],
)
def test_runs_by_heartbeat(tmp_path: Path, state: str, age: float, expected: str) -> None:
    write_progress(tmp_path, "20270115-run", state, NOW - age)
    reading = agent.read_runs(str(tmp_path), NOW, 120)
    assert reading.state == expected
    assert reading.last_active == NOW - age
    if state == "running" and age > 120:
        assert "stale" in reading.detail


def test_runs_one_live_among_stale(tmp_path: Path) -> None:
    write_progress(tmp_path, "old", "running", NOW - 3600)
    write_progress(tmp_path, "new", "running", NOW - 3)
    reading = agent.read_runs(str(tmp_path), NOW, 120)
    assert (reading.state, reading.detail) == ("active", "running: new")


def test_runs_half_written_file_counts_while_fresh(tmp_path: Path) -> None:
    path = write_progress(tmp_path, "r", "running", NOW)
    path.write_text('{"state": "runn')
    os.utime(path, (NOW - 5, NOW - 5))
    assert agent.read_runs(str(tmp_path), NOW, 120).state == "unreadable"
    os.utime(path, (NOW - 500, NOW - 500))
    assert agent.read_runs(str(tmp_path), NOW, 120).state == "idle"


def test_runs_without_outputs(tmp_path: Path) -> None:
    assert agent.read_runs(str(tmp_path), NOW, 120).state == "idle"


# ---------------------------------------------------------------- gpu


@pytest.fixture
def fake_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def make(body: str) -> None:
        script = bin_dir / "nvidia-smi"
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)

    return make


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("printf '3\\n85\\n'", "active"),  # one of two GPUs busy
        ("printf '3\\n10\\n'", "idle"),  # at the threshold is not above it
        ("echo 'NVIDIA-SMI has failed' >&2; exit 9", "unreadable"),
        ("echo '[N/A]'", "unreadable"),
        ("true", "unreadable"),
    ],
)
def test_gpu_with_a_fake_nvidia_smi(fake_smi, body: str, expected: str) -> None:
    fake_smi(body)
    reading = agent.read_gpu(NOW, 10)
    assert reading.state == expected
    assert (reading.last_active == NOW) == (expected == "active")


def test_gpu_absent_without_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert agent.read_gpu(NOW, 10).state == "absent"


# ---------------------------------------------------------------- ssh


def fake_proc(root: Path, cmdlines: dict[int, bytes]) -> Path:
    for pid, cmdline in cmdlines.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "cmdline").write_bytes(cmdline)
    (root / "self").mkdir(exist_ok=True)
    return root


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        (b"sshd: alice@pts/0", "active"),
        (b"sshd-session: bob@pts/12\0\0\0", "active"),  # OpenSSH 9.8+
        (b"sshd: alice@notty", "idle"),  # ssh -N -L: a port forward only
        (b"sshd: alice [priv]", "idle"),  # the privileged half of any session
        (b"/usr/sbin/sshd\0-D", "idle"),  # the listener
        (b"bash\0-c\0echo sshd: alice@pts/0", "idle"),
    ],
)
def test_ssh_from_a_fake_proc_tree(tmp_path: Path, cmdline: bytes, expected: str) -> None:
    root = fake_proc(tmp_path / "proc", {1: b"/sbin/init", 4242: cmdline})
    reading = agent.read_ssh(str(root), NOW)
    assert reading.state == expected


def test_ssh_unreadable_proc(tmp_path: Path) -> None:
    assert agent.read_ssh(str(tmp_path / "missing"), NOW).state == "unreadable"


# ---------------------------------------------------------------- jupyter


def jupyter_home(tmp_path: Path) -> str:
    (tmp_path / "port").write_text("8899\n")
    (tmp_path / "token").write_text("s3cret\n")
    return str(tmp_path)


def test_jupyter_busy_kernel_and_untracked_requests(tmp_path: Path) -> None:
    asked = []

    def get(url: str, token: str):
        asked.append(url)
        assert token == "s3cret"
        if "/kernels" in url:
            return [
                {
                    "id": "aaaaaaaa-1",
                    "execution_state": "idle",
                    "last_activity": "2027-01-15T07:50:00Z",
                },
                {
                    "id": "bbbbbbbb-2",
                    "execution_state": "busy",
                    "last_activity": "2027-01-15T07:40:00Z",
                },
            ]
        return [{"name": "1", "last_activity": "2027-01-15T07:55:00.123456Z"}]

    reading = agent.read_jupyter(jupyter_home(tmp_path), get=get)
    assert reading.state == "active"
    assert "bbbbbbbb" in reading.detail
    assert reading.last_active == NOW - 5 * 60 + 0.123456
    # Each request carries no_track_activity, or the agent's polling would be activity.
    assert asked == [
        "http://127.0.0.1:8899/api/kernels?no_track_activity=1",
        "http://127.0.0.1:8899/api/terminals?no_track_activity=1",
    ]


def test_jupyter_idle_kernels_report_their_last_activity(tmp_path: Path) -> None:
    def get(url: str, token: str):
        if "/kernels" in url:
            return [{"id": "k", "execution_state": "idle", "last_activity": "2027-01-15T07:30:00Z"}]
        raise urllib.error.HTTPError(url, 404, "no terminals", {}, None)

    reading = agent.read_jupyter(jupyter_home(tmp_path), get=get)
    assert (reading.state, reading.last_active) == ("idle", NOW - 30 * 60)


def test_jupyter_refusing_right_after_the_start_is_starting(tmp_path: Path) -> None:
    """Refused or reset within START_GRACE of the container's start: Jupyter is starting
    (its activity time is the start); later, or any other failure: unreadable."""

    def refused(url: str, token: str):
        raise urllib.error.URLError(ConnectionRefusedError(111, "refused"))

    def reset(url: str, token: str):
        raise ConnectionResetError(104, "reset by peer")  # docker-proxy, nothing behind

    def timeout(url: str, token: str):
        raise urllib.error.URLError(TimeoutError("timed out"))

    home = jupyter_home(tmp_path)
    for down in (refused, reset):
        reading = agent.read_jupyter(home, get=down, started=NOW - 5, now=NOW)
        assert (reading.state, reading.seen_at) == ("starting", NOW - 5)
        late = agent.read_jupyter(home, get=down, started=NOW - agent.START_GRACE - 1, now=NOW)
        assert late.state == "unreadable"
        assert agent.read_jupyter(home, get=down, now=NOW).state == "unreadable"
    assert agent.read_jupyter(home, get=timeout, started=NOW - 5, now=NOW).state == "unreadable"


def test_runs_alive_report_their_last_heartbeat(tmp_path: Path) -> None:
    write_progress(tmp_path, "r1", "running", NOW - 30)
    write_progress(tmp_path, "r2", "running", NOW - 10)
    reading = agent.read_runs(str(tmp_path), NOW, 120)
    assert (reading.state, reading.seen_at) == ("active", NOW - 10)


def test_jupyter_unreadable(tmp_path: Path) -> None:
    def down(url: str, token: str):
        raise urllib.error.URLError("connection refused")

    assert agent.read_jupyter(jupyter_home(tmp_path), get=down).state == "unreadable"
    assert agent.read_jupyter(str(tmp_path / "nothing"), get=down).state == "unreadable"


# ---------------------------------------------------------------- outputs not fetched


def test_unfetched_outputs(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    for run in ("fetched", "never", "changed", "empty"):
        (out / run).mkdir(parents=True)
    (out / "fetched" / "model.pt").write_text("w")
    (out / "never" / "model.pt").write_text("w")
    (out / "changed" / "model.pt").write_text("w")
    for run in ("fetched", "changed"):
        (out / run / ".fetched").write_text("")
    os.utime(out / "fetched" / "model.pt", (NOW - 100, NOW - 100))
    os.utime(out / "fetched" / ".fetched", (NOW - 50, NOW - 50))
    os.utime(out / "changed" / ".fetched", (NOW - 50, NOW - 50))
    os.utime(out / "changed" / "model.pt", (NOW - 10, NOW - 10))  # written after the fetch
    (out / "loose.txt").write_text("x")
    assert hard.unfetched_outputs(str(tmp_path)) == ["changed", "loose.txt", "never"]


def test_a_run_uploaded_to_s3_counts_as_safe_until_it_changes(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    for run in ("uploaded", "uploaded-then-changed"):
        (out / run).mkdir(parents=True)
        (out / run / "checkpoint.pt").write_text("w")
        (out / run / ".uploaded").write_text("")
        os.utime(out / run / ".uploaded", (NOW - 50, NOW - 50))
    os.utime(out / "uploaded" / "checkpoint.pt", (NOW - 100, NOW - 100))
    os.utime(out / "uploaded-then-changed" / "checkpoint.pt", (NOW - 10, NOW - 10))
    assert hard.unfetched_outputs(str(tmp_path)) == ["uploaded-then-changed"]


# ---------------------------------------------------------------- config


def test_config_rejects_bad_values(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"action": "hibernate"}))
    with pytest.raises(hard.ConfigError, match="action 'hibernate': use stop or terminate"):
        hard.load_config(str(path))
    path.write_text(json.dumps({"notebook_home": "/nb", "idle_seconds": "1.5"}))
    config = hard.load_config(str(path))
    assert (config["idle_seconds"], config["state_dir"]) == (1.5, "/nb/autostop")


# ---------------------------------------------------------------- one tick on files


@pytest.fixture
def aws_config(tmp_path: Path) -> dict:
    proc = fake_proc(tmp_path / "proc", {1: b"/sbin/init"})
    (proc / "stat").write_text(f"cpu 1 2 3\nbtime {int(NOW - 3600)}\n")
    home = tmp_path / "home"
    home.mkdir()
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "target": "aws",
                "notebook_home": str(home),
                "proc_root": str(proc),
                "docker_socket": str(tmp_path / "no-docker.sock"),  # Docker does not answer
                "idle_seconds": 1800,
                "max_seconds": 43200,
                "poweroff_command": ["/bin/sh", "-c", f"echo off > {tmp_path / 'powered-off'}"],
            }
        )
    )
    return hard.load_config(str(path))


def test_tick_counts_an_unreadable_jupyter_as_activity_and_logs_it(aws_config, tmp_path) -> None:
    status = agent.tick(aws_config, now=NOW)  # no port or token file: Jupyter unreadable
    assert status["verdict"] == "active"
    log = (Path(aws_config["state_dir"]) / "agent.log").read_text()
    assert "signal jupyter unreadable, counted as activity" in log
    saved = json.loads((Path(aws_config["state_dir"]) / "status.json").read_text())
    assert saved["policy"] == "stops after 30 min idle; hard stop at 19:00 UTC"
    assert not (tmp_path / "powered-off").exists()


def test_tick_warns_then_powers_off(aws_config, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(agent, "read_jupyter", lambda home, **_: agent.Reading("jupyter", "idle"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    state = Path(aws_config["state_dir"]) / "state.json"  # last activity 27 min ago
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"last_active": NOW - 27 * 60}))
    warn = agent.tick(aws_config, now=NOW)
    assert warn["verdict"] == "warn"
    assert "stops at 08:03 UTC unless there is activity" in warn["warning"]
    assert not (tmp_path / "powered-off").exists()
    acted = agent.tick(aws_config, now=NOW + 3 * 60)
    assert acted["verdict"] == "act"
    assert (tmp_path / "powered-off").read_text() == "off\n"
    assert (
        "power off; the instance stops" in (Path(aws_config["state_dir"]) / "agent.log").read_text()
    )


def test_tick_refuses_to_terminate_unfetched_outputs(aws_config, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(agent, "read_jupyter", lambda home, **_: agent.Reading("jupyter", "idle"))
    monkeypatch.setenv("PATH", str(tmp_path))
    write_progress(Path(aws_config["notebook_home"]), "r1", "done", NOW - 7200)
    config = dict(aws_config, action="terminate", poweroff_behavior="terminate")
    status = agent.tick(config, now=NOW + 3600)
    assert status["verdict"] == "refused"
    assert (
        "terminate refused: terminating would delete 1 output(s) not fetched (r1)"
        in status["warning"]
    )
    assert not (tmp_path / "powered-off").exists()


# ---------------------------------------------------------------- the loops without systemd


def test_loops_start_once_and_restart_on_a_new_config(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    settings = {
        "notebook_home": str(tmp_path / "home"),
        "container": "wyvern-test-none",
        "interval_seconds": 1,
    }
    settings["docker_socket"] = str(tmp_path / "no-docker.sock")
    path.write_text(json.dumps(settings))
    (tmp_path / "home").mkdir()  # the notebook's folder, as the notebook role made it
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    try:
        first = agent.ensure_loops(str(path), python)
        assert first["changed"] is True
        assert all(Path(f"/proc/{pid}").exists() for pid in first["pids"].values())
        again = agent.ensure_loops(str(path), python)
        if again["changed"]:
            # Seen once in a full CI run: a hard-limit loop restarted right after its
            # first start (cause not found yet). Once both run, a call must change nothing.
            first = again
            time.sleep(1)
            again = agent.ensure_loops(str(path), python)
        assert (again["changed"], again["pids"]) == (False, first["pids"])
        path.write_text(json.dumps(dict(settings, idle_seconds=60)))
        changed = agent.ensure_loops(str(path), python)
        assert changed["changed"] is True
        assert set(changed["pids"].values()).isdisjoint(first["pids"].values())
        # Each loop ticks: Docker does not answer here, and the log says so.
        deadline = time.monotonic() + 20
        log = tmp_path / "home" / "autostop" / "agent.log"
        while not (log.exists() and "tick failed" in log.read_text()):
            assert time.monotonic() < deadline, "the loops never ticked"
            time.sleep(0.2)
    finally:
        assert agent.stop_loops(str(path))["changed"] is True


def test_a_stopped_notebook_on_aws_is_no_activity(aws_config, tmp_path, monkeypatch) -> None:
    """Jupyter down because its container stopped: not 'unreadable' (which would keep the
    instance up until the hard limit), but no kernel at all."""
    monkeypatch.setattr(hard, "container_state", lambda config: {"Running": False})
    monkeypatch.setenv("PATH", str(tmp_path))
    status = agent.tick(aws_config, now=NOW + 3600)
    jupyter = next(s for s in status["signals"] if s["signal"] == "jupyter")
    assert (jupyter["state"], jupyter["detail"]) == ("idle", "notebook not running")
    assert status["verdict"] == "act"
    assert (tmp_path / "powered-off").exists()


def test_a_loop_ends_when_its_workbench_folder_is_gone(tmp_path: Path) -> None:
    """A workbench removed without teardown (its notebook folder deleted) leaves no loop
    ticking for ever: the loop returns without a tick."""
    path = tmp_path / "config.json"
    settings = {"notebook_home": str(tmp_path / "gone"), "container": "x", "interval_seconds": 1}
    path.write_text(json.dumps(settings))
    ticks: list[object] = []
    started = time.monotonic()
    assert hard.run_loop(str(path), ticks.append, "agent") == 0
    assert ticks == [] and time.monotonic() - started < 5


def test_the_loop_wakes_when_the_window_ends(tmp_path: Path) -> None:
    """An idle verdict whose window ends before the next interval: the next tick comes a
    hair after the window's end, not a whole interval later (the stop lag's granularity)."""
    path = tmp_path / "config.json"
    (tmp_path / "home").mkdir()
    settings = {"notebook_home": str(tmp_path / "home"), "container": "x", "interval_seconds": 30}
    path.write_text(json.dumps(settings))
    ticks: list[float] = []

    def tick(config: dict) -> dict:
        ticks.append(time.time())
        if len(ticks) == 2:
            path.unlink()  # ends the loop
        return {"verdict": "idle", "act_at": ticks[0] + 0.4}

    assert hard.run_loop(str(path), tick, "agent") == 0
    assert len(ticks) == 2
    assert ticks[0] + 0.4 <= ticks[1] < ticks[0] + 5  # never early, not 30 s later
