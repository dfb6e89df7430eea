#!/usr/bin/env python3
"""Wyvern workbench idle auto-stop agent: stop the workbench nobody uses.

Standard library only. Run once a minute (systemd timer, or --loop without systemd).
Each signal is read on its own; a signal that cannot be read counts as activity and says
so in the log (<state_dir>/agent.log). After `idle_seconds` without activity the agent
warns (status.json, the log) and then acts: on aws it powers the instance off from
inside (the shutdown behaviour set at launch makes that a stop or a terminate), on local
it stops the notebook container. The hard limit lives in wyvern_hardstop.py, run by a
timer of its own.

Signals:
  jupyter  a kernel busy, or a kernel or terminal active (last_activity), read from
           GET /api/kernels and /api/terminals with `no_track_activity=1`, so that the
           agent's polling does not itself count as activity (jupyter_server skips
           api_last_activity for requests carrying that argument). A kernel no client
           ever connected to stays "starting": only its start time counts. Nothing
           answering on the port within START_GRACE seconds of the container's start is
           Jupyter starting: the start is the last activity, and the agent does not act
           until Jupyter answers (later, or any other failure: unreadable).
  runs     <notebook_home>/outputs/<run_id>/progress.json: {"state": starting|running|
           done|failed|stopped, "updated_at": unix time}; a starting or running run is
           activity while updated_at is at most run_heartbeat_seconds old.
  gpu      nvidia-smi utilization.gpu above gpu_threshold percent (absent: no nvidia-smi).
  ssh      an interactive SSH session: a `sshd: user@pts/N` (or sshd-session) process
           under proc_root; `sshd: user@notty` (port forwards, commands) does not count.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wyvern_hardstop as hard

UTC = hard.UTC

ACTIVE, IDLE, UNREADABLE, ABSENT = "active", "idle", "unreadable", "absent"
# Jupyter not answering yet right after its container started: keeps the workbench up
# like activity, but its activity time is the start, not each tick that saw it starting.
STARTING = "starting"
# Seconds after the container's start during which a refused or reset connection is
# Jupyter starting (it answers within seconds; later it is unreadable, i.e. activity).
START_GRACE = 120.0
RUNNING_STATES = ("starting", "running")
SSH_TTY = re.compile(r"^sshd(?:-session)?: (\S+)@(pts/\d+|tty\d*)")


@dataclasses.dataclass(frozen=True)
class Reading:
    """One signal's reading: its state, the latest activity it saw, and why.

    ``seen_at``: for an active (or starting) reading, when the activity that keeps the
    workbench up was last real: a run's last heartbeat, the container's start. None: now.
    """

    signal: str
    state: str
    last_active: float | None = None
    detail: str = ""
    seen_at: float | None = None


# ---------------------------------------------------------------- signals


def parse_iso(text: str | None) -> float | None:
    if not text:
        return None
    text = text.replace("Z", "+00:00")
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip()


def jupyter_get(url: str, token: str, timeout: float = 5.0) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _nothing_answers(exc: BaseException) -> bool:
    """A refused or reset connection: no server listens behind the port (yet)."""
    return isinstance(exc, ConnectionError) or isinstance(
        getattr(exc, "reason", None), ConnectionError
    )


def read_jupyter(
    notebook_home: str,
    host: str = "127.0.0.1",
    get: Callable[[str, str], Any] = jupyter_get,
    started: float | None = None,
    now: float | None = None,
) -> Reading:
    """Kernels and terminals through the REST API, without touching the server's clock.
    ``started``: when the notebook container started (a refused connection within
    START_GRACE of it is Jupyter starting)."""
    try:
        port = int(_read_text(os.path.join(notebook_home, "port")))
        token = _read_text(os.path.join(notebook_home, "token"))
    except (OSError, ValueError) as exc:
        return Reading("jupyter", UNREADABLE, detail=f"no port or token file: {type(exc).__name__}")
    base = f"http://{host}:{port}/api"
    try:
        kernels = get(f"{base}/kernels?no_track_activity=1", token)
    except (OSError, ValueError, urllib.error.URLError) as exc:
        now = time.time() if now is None else now
        if started is not None and _nothing_answers(exc) and 0 <= now - started <= START_GRACE:
            return Reading(
                "jupyter",
                STARTING,
                detail=f"starting: nothing answers yet, {now - started:.0f} s after the start",
                seen_at=started,
            )
        return Reading("jupyter", UNREADABLE, detail=f"GET /api/kernels failed: {exc}")
    try:
        terminals = get(f"{base}/terminals?no_track_activity=1", token)
    except urllib.error.HTTPError as exc:
        # 404: the server runs without terminals; anything else is unreadable.
        if exc.code != 404:
            return Reading("jupyter", UNREADABLE, detail=f"GET /api/terminals failed: {exc}")
        terminals = []
    except (OSError, ValueError) as exc:
        return Reading("jupyter", UNREADABLE, detail=f"GET /api/terminals failed: {exc}")
    if not isinstance(kernels, list) or not isinstance(terminals, list):
        return Reading("jupyter", UNREADABLE, detail="unexpected answer from the API")
    busy = [k.get("id", "?")[:8] for k in kernels if k.get("execution_state") == "busy"]
    stamps = [parse_iso(item.get("last_activity")) for item in [*kernels, *terminals]]
    latest = max((s for s in stamps if s is not None), default=None)
    summary = f"{len(kernels)} kernel(s), {len(terminals)} terminal(s)"
    if busy:
        return Reading("jupyter", ACTIVE, latest, f"{summary}; busy: {', '.join(busy)}")
    return Reading("jupyter", IDLE, latest, summary)


def read_runs(notebook_home: str, now: float, heartbeat: float) -> Reading:
    """Headless runs from their progress.json heartbeat files."""
    root = os.path.join(notebook_home, "outputs")
    try:
        entries = sorted(os.listdir(root))
    except FileNotFoundError:
        return Reading("runs", IDLE, detail="no outputs directory")
    except OSError as exc:
        return Reading("runs", UNREADABLE, detail=f"cannot list {root}: {exc}")
    live, stale, bad, latest, beat = [], [], [], None, None
    for entry in entries:
        path = os.path.join(root, entry, "progress.json")
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            continue
        try:
            with open(path, encoding="utf-8") as handle:
                progress = json.load(handle)
            state = progress["state"]
            updated = float(progress["updated_at"])
        except (OSError, ValueError, KeyError, TypeError):
            # A file being rewritten in place reads half; a fresh one counts, an old one not.
            if now - mtime <= heartbeat:
                bad.append(entry)
            continue
        latest = updated if latest is None else max(latest, updated)
        if state in RUNNING_STATES:
            if now - updated <= heartbeat:
                live.append(entry)
                beat = updated if beat is None else max(beat, updated)
            else:
                stale.append(entry)
    if bad:
        return Reading("runs", UNREADABLE, latest, f"unreadable progress.json in {', '.join(bad)}")
    if live:
        # A live run is activity as of its last heartbeat: once it stops beating, the idle
        # clock runs from there, not from the last tick within the heartbeat tolerance.
        return Reading("runs", ACTIVE, latest, f"running: {', '.join(live)}", seen_at=beat)
    detail = (
        f"stale heartbeat (not activity): {', '.join(stale)}" if stale else "no run in progress"
    )
    return Reading("runs", IDLE, latest, detail)


def read_gpu(
    now: float, threshold: float, which: Callable[[str], str | None] = shutil.which
) -> Reading:
    """GPU utilisation now (sampled every interval, so every minute of the window)."""
    smi = which("nvidia-smi")
    if smi is None:
        return Reading("gpu", ABSENT, detail="no nvidia-smi (no GPU)")
    try:
        proc = subprocess.run(
            [smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        values = [float(line.strip()) for line in proc.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return Reading("gpu", UNREADABLE, detail=f"nvidia-smi failed: {type(exc).__name__}")
    if not values:
        return Reading("gpu", UNREADABLE, detail="nvidia-smi listed no GPU")
    busiest = max(values)
    detail = f"utilisation {', '.join(f'{v:g}%' for v in values)} (threshold {threshold:g}%)"
    if busiest > threshold:
        return Reading("gpu", ACTIVE, now, detail)
    return Reading("gpu", IDLE, detail=detail)


def read_ssh(proc_root: str, now: float) -> Reading:
    """Interactive SSH sessions: sshd processes holding a terminal."""
    try:
        pids = [p for p in os.listdir(proc_root) if p.isdigit()]
    except OSError as exc:
        return Reading("ssh", UNREADABLE, detail=f"cannot list {proc_root}: {exc}")
    sessions = []
    for pid in pids:
        try:
            with open(os.path.join(proc_root, pid, "cmdline"), "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            continue  # the process ended while we looked
        match = SSH_TTY.match(cmdline)
        if match:
            sessions.append(f"{match.group(1)}@{match.group(2)}")
    if sessions:
        return Reading("ssh", ACTIVE, now, f"interactive: {', '.join(sorted(sessions))}")
    return Reading("ssh", IDLE, detail="no interactive session")


# ---------------------------------------------------------------- the decision


def decide(
    readings: Iterable[Reading],
    now: float,
    previous: float | None,
    started: float | None,
    policy: dict[str, Any],
) -> dict[str, Any]:
    """What the agent should do now. Pure: readings, a clock and the policy in; a verdict
    (off, active, idle, warn, act) out, with the idle clock and the reasons.

    The idle clock runs from the latest of: the last tick that saw activity (previous),
    the workbench's start (started), and any activity time a signal reports. An active
    signal's activity is `now` unless it says when it was last real (`seen_at`: a run's
    last heartbeat, Jupyter still starting since the container's start), so a run that
    died is idle from its last heartbeat, not from the tick that last believed it. An
    unreadable signal makes `now` the last activity. Active, starting or unreadable: the
    agent does not act.
    """
    readings = list(readings)
    busy = [r for r in readings if r.state in (ACTIVE, STARTING)]
    unreadable = [r for r in readings if r.state == UNREADABLE]
    stamps = [t for t in (previous, started) if t is not None]
    stamps += [r.last_active for r in readings if r.last_active is not None]
    stamps += [now if r.seen_at is None else r.seen_at for r in busy]
    last_active = now if unreadable else min(max(stamps, default=now), now)
    idle_seconds = policy["idle_seconds"]
    reasons = [f"{r.signal} {r.state}: {r.detail}" for r in busy]
    reasons += [f"{r.signal} unreadable (counts as activity): {r.detail}" for r in unreadable]
    idle_for = now - last_active
    if not idle_seconds:
        verdict = "off"
    elif busy or unreadable:
        verdict = "active"
    elif idle_for >= idle_seconds:
        verdict = "act"
    elif idle_for >= idle_seconds - policy["warn_seconds"]:
        verdict = "warn"
    else:
        verdict = "idle"
    return {
        "verdict": verdict,
        "last_active": last_active,
        "idle_for": idle_for,
        "act_at": last_active + idle_seconds if idle_seconds else None,
        "reasons": reasons,
    }


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds < 7200:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"


def _clock(stamp: float, now: float) -> str:
    when = dt.datetime.fromtimestamp(stamp, UTC)
    today = dt.datetime.fromtimestamp(now, UTC).date()
    return when.strftime("%H:%M UTC" if when.date() == today else "%Y-%m-%d %H:%M UTC")


def policy_text(policy: dict[str, Any], started: float | None, now: float) -> str:
    """One line for people: 'stops after 30 min idle; hard stop at 14:05 UTC'."""
    action, _ = hard.resolve_action(policy, [])
    verb = {
        "stop": "stops",
        "stop-api": "stops",
        "terminate": "terminates",
        "refuse": "cannot power off",
    }[action]
    if action == "refuse":
        idle = "idle auto-stop refused (powering off would terminate; see the log)"
    elif policy["idle_seconds"]:
        idle = f"{verb} after {_duration(policy['idle_seconds'])} idle"
        if action == "terminate" and policy.get("stop_command"):
            idle += " (stops instead while outputs are not fetched)"
    else:
        idle = "idle auto-stop off"
    deadline = hard.hard_deadline(policy, started)
    if not policy["max_seconds"]:
        limit = "no hard limit"
    elif deadline is None:
        limit = f"hard {action if action != 'refuse' else 'stop'} {_duration(policy['max_seconds'])} after start"
    else:
        limit = (
            f"hard {'terminate' if action == 'terminate' else 'stop'} at {_clock(deadline, now)}"
        )
    return f"{idle}; {limit}"


# ---------------------------------------------------------------- one tick


def notebook_container(config: dict[str, Any]) -> tuple[bool, float | None]:
    """(is the notebook container known to be stopped or gone, when it started). A
    stopped notebook has no kernel to keep the instance up (Docker not answering: not
    known, and no start time)."""
    try:
        state = hard.container_state(config)
    except OSError:
        return False, None
    if state is None or not state.get("Running"):
        return True, None
    return False, hard.parse_docker_time(state.get("StartedAt", ""))


def read_signals(config: dict[str, Any], now: float) -> list[Reading]:
    home = config["notebook_home"]
    down, started = notebook_container(config)
    # On local a stopped notebook is handled before (the tick does not read signals).
    down = down and config["target"] == "aws"

    def jupyter() -> Reading:
        if down:
            return Reading("jupyter", IDLE, detail="notebook not running")
        return read_jupyter(home, started=started, now=now)

    readers: list[tuple[str, Callable[[], Reading]]] = [
        ("jupyter", jupyter),
        ("runs", lambda: read_runs(home, now, float(config["run_heartbeat_seconds"]))),
        ("gpu", lambda: read_gpu(now, float(config["gpu_threshold"]))),
        ("ssh", lambda: read_ssh(config["proc_root"], now)),
    ]
    readings = []
    for name, reader in readers:
        try:
            readings.append(reader())
        except Exception as exc:
            readings.append(
                Reading(name, UNREADABLE, detail=f"reader failed: {type(exc).__name__}: {exc}")
            )
    return readings


def tick(config: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    state_dir = config["state_dir"]
    state_path = os.path.join(state_dir, "state.json")
    state = hard.read_json(state_path)
    try:
        started, running = hard.started_at(config)
    except OSError as exc:
        started, running = None, True
        hard.log(
            config,
            "agent",
            f"cannot read when the workbench started ({exc}); counting from the agent's state",
        )
    status: dict[str, Any] = {"updated_at": now, "policy": policy_text(config, started, now)}
    status["hard_stop_at"] = hard.hard_deadline(config, started)
    if not running:
        # Keep what the last action was, for the report and for measuring the lag.
        previous = hard.read_json(os.path.join(state_dir, "status.json"))
        last_action = previous.get("last_action")
        if previous.get("acted_at"):
            keys = ("acted_at", "done", "last_active", "idle_for", "reason")
            last_action = {k: previous.get(k) for k in keys}
        status.update(verdict="not running", signals=[], last_action=last_action)
        hard.write_json(os.path.join(state_dir, "status.json"), status)
        return status
    readings = read_signals(config, now)
    decision = decide(readings, now, state.get("last_active"), started, config)
    status.update(decision)
    status["signals"] = [dataclasses.asdict(r) for r in readings]
    for reading in readings:
        if reading.state == UNREADABLE:
            hard.log(
                config,
                "agent",
                f"signal {reading.signal} unreadable, counted as activity: {reading.detail}",
            )
    verdict = decision["verdict"]
    if verdict in ("warn", "act"):
        action, why = hard.resolve_action(config, hard.unfetched_outputs(config["notebook_home"]))
        status.update(action=action, reason=why)
        status["warning"] = (
            f"idle for {_duration(decision['idle_for'])}: {why} at {_clock(decision['act_at'], now)} "
            "unless there is activity"
        )
        if verdict == "act" and action == "refuse":
            status["verdict"] = "refused"
            status["warning"] = why
        if verdict != state.get("verdict") or status["verdict"] == "refused":
            hard.log(config, "agent", status["warning"])
    hard.write_json(
        state_path, {"last_active": decision["last_active"], "verdict": status["verdict"]}
    )
    hard.write_json(os.path.join(state_dir, "status.json"), status)
    if status["verdict"] == "act":
        hard.log(config, "agent", f"idle for {_duration(decision['idle_for'])}: {status['reason']}")
        status["acted_at"] = now  # the decision's time; Docker's stop takes its own
        status["done"] = hard.perform(config, status["action"])
        status["finished_at"] = time.time()
        hard.log(config, "agent", status["done"])
        hard.write_json(os.path.join(state_dir, "status.json"), status)
    return status


# ---------------------------------------------------------------- the loop without systemd


def _alive(pid: int, needle: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return needle.encode() in handle.read()
    except OSError:
        return False


def ensure_loops(config_path: str, python: str) -> dict[str, Any]:
    """Make both loops (agent and hard limit) run with this config and these scripts:
    start the missing ones, restart those started from other files. Idempotent."""
    config = hard.load_config(config_path)
    here = os.path.dirname(os.path.abspath(__file__))
    wanted = hard.fingerprint(config_path)
    changed, pids = False, {}
    for kind, script in (("agent", "wyvern_autostop.py"), ("hardstop", "wyvern_hardstop.py")):
        pidfile = os.path.join(config["state_dir"], f"{kind}.pid")
        info = hard.read_json(pidfile)
        pid = int(info.get("pid", 0) or 0)
        alive = pid > 0 and _alive(pid, os.path.abspath(config_path))
        if alive and info.get("fingerprint") == wanted:
            pids[kind] = pid
            continue
        if alive:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while _alive(pid, os.path.abspath(config_path)) and time.monotonic() < deadline:
                time.sleep(0.1)
        with open(os.devnull, "r+b") as null:
            proc = subprocess.Popen(
                [
                    python,
                    os.path.join(here, script),
                    "--config",
                    os.path.abspath(config_path),
                    "--loop",
                ],
                stdin=null,
                stdout=null,
                stderr=null,
                start_new_session=True,
                close_fds=True,
            )
        hard.write_json(pidfile, {"pid": proc.pid, "fingerprint": wanted}, 0o600)
        pids[kind] = proc.pid
        changed = True
    return {"changed": changed, "pids": pids}


def _loop_pids(config_path: str) -> list[int]:
    """Every loop process started for this config, found by its command line (not only by
    the pidfiles, which a restart or a race can leave behind)."""
    needle = os.path.abspath(config_path).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if needle in argv and b"--loop" in argv:
            found.append(int(entry))
    return found


def stop_loops(config_path: str) -> dict[str, Any]:
    """Stop both loops of this config and wait until they are gone (SIGKILL after 10 s)."""
    pids = _loop_pids(config_path)
    needle = os.path.abspath(config_path)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while any(_alive(pid, needle) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid, needle):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return {"changed": bool(pids)}


def policy_report(config: dict[str, Any]) -> dict[str, Any]:
    """The policy for people and the last warning the agent gave (status.json), acting on
    nothing: what the role shows and site.yml's report prints."""
    now = time.time()
    try:
        started, running = hard.started_at(config)
    except OSError:
        started, running = None, True
    status = hard.read_json(os.path.join(config["state_dir"], "status.json"))
    return {
        "policy": policy_text(config, started, now),
        "hard_stop_at": hard.hard_deadline(config, started),
        "running": running,
        "warning": status.get("warning") or "",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--loop", action="store_true", help="tick every interval (no systemd)")
    mode.add_argument(
        "--policy", action="store_true", help="print the policy as JSON, act on nothing"
    )
    mode.add_argument(
        "--ensure-loops",
        action="store_true",
        help="start or restart both loops, then print the policy as --policy does",
    )
    mode.add_argument("--stop-loops", action="store_true", help="stop both loops")
    args = parser.parse_args(argv)
    if args.loop:
        return hard.run_loop(args.config, tick, "agent")
    if args.ensure_loops:
        # One call for the role: the loops, then the policy they apply.
        loops = ensure_loops(args.config, sys.executable)
        print(json.dumps({**loops, **policy_report(hard.load_config(args.config))}))
        return 0
    if args.stop_loops:
        print(json.dumps(stop_loops(args.config)))
        return 0
    config = hard.load_config(args.config)
    if args.policy:
        print(json.dumps(policy_report(config)))
        return 0
    print(json.dumps(tick(config)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
