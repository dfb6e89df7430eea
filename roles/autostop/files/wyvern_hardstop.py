#!/usr/bin/env python3
"""Wyvern workbench hard limit: power the workbench off once it has run `max_hours`.

Standard library only. The idle agent (wyvern_autostop.py) imports this file for the
config, the clock and the actions; this file never imports the agent, and its own timer
(or loop) runs it alone, reading no activity signal: a broken or hanging signal reader
cannot keep the workbench past its hard limit.

Config (JSON, written by the autostop role; every key has a default here):
  name, target (local|aws), notebook_home, container, idle_seconds (0: off),
  max_seconds (0: off), action (stop|terminate), poweroff_behavior (what powering the
  instance off does: its shutdown behaviour at launch), terminate_unfetched,
  warn_seconds, interval_seconds, gpu_threshold, run_heartbeat_seconds, proc_root,
  docker_socket, poweroff_command, stop_command (a command that stops this instance through
  EC2's API; empty: the instance cannot stop itself when powering off would terminate it),
  state_dir.

Outputs contract: a directory directly under <notebook_home>/outputs/ has been fetched
when it holds a file `.fetched` (written by the control node after it copied the
directory) and nothing in it changed after that file. Anything else there is unfetched.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from typing import Any

FETCHED_MARKER = ".fetched"
# Written by the durable outputs agent (role durable_outputs) once every file of the run is
# in S3; a run so marked is as safe as a fetched one: teardown brings it home from S3.
UPLOADED_MARKER = ".uploaded"
_MARKERS = (FETCHED_MARKER, UPLOADED_MARKER)
# The agent runs on the host's own Python (3.8 and up), which may lack datetime.UTC.
UTC = dt.timezone(dt.timedelta(0))
LOG_MAX_BYTES = 1_000_000
DEFAULTS: dict[str, Any] = {
    "name": "workbench",
    "target": "local",
    "notebook_home": "/var/lib/wyvern/workbench",
    "container": "workbench",
    "idle_seconds": 1800.0,
    "max_seconds": 12 * 3600.0,
    "action": "stop",
    "poweroff_behavior": "stop",
    "terminate_unfetched": False,
    "warn_seconds": 300.0,
    "interval_seconds": 60.0,
    "gpu_threshold": 10.0,
    "run_heartbeat_seconds": 120.0,
    "proc_root": "/proc",
    "docker_socket": "/var/run/docker.sock",
    "poweroff_command": ["shutdown", "-h", "now"],
    "stop_command": [],
    "state_dir": "",
}


class ConfigError(ValueError):
    """A config the agent cannot act on; str() names the key and the fix."""


def load_config(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        raw = json.load(handle)
    config = dict(DEFAULTS, **raw)
    if config["target"] not in ("local", "aws"):
        raise ConfigError(f"target {config['target']!r}: use local or aws")
    for key in ("action", "poweroff_behavior"):
        if config[key] not in ("stop", "terminate"):
            raise ConfigError(f"{key} {config[key]!r}: use stop or terminate")
    for key in ("idle_seconds", "max_seconds", "warn_seconds", "interval_seconds"):
        config[key] = float(config[key])
        if config[key] < 0:
            raise ConfigError(f"{key} {config[key]}: must be 0 or more")
    if not config["state_dir"]:
        config["state_dir"] = os.path.join(config["notebook_home"], "autostop")
    return config


# ---------------------------------------------------------------- files and log


def write_json(path: str, data: dict[str, Any], mode: int = 0o644) -> None:
    """Replace a JSON file atomically (a reader never sees half of it)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def log(config: dict[str, Any], who: str, message: str) -> None:
    path = os.path.join(config["state_dir"], "agent.log")
    os.makedirs(config["state_dir"], exist_ok=True)
    try:
        if os.path.getsize(path) > LOG_MAX_BYTES:
            os.replace(path, f"{path}.1")
    except OSError:
        pass
    stamp = dt.datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(f"{stamp} {who}: {message}\n")


# ---------------------------------------------------------------- the clock


def boot_time(proc_root: str) -> float | None:
    try:
        with open(os.path.join(proc_root, "stat"), encoding="ascii") as handle:
            for line in handle:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def docker_request(
    socket_path: str, method: str, path: str, timeout: float = 60.0
) -> tuple[int, Any]:
    """One request to the Docker Engine API over its unix socket: (status, parsed body)."""

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(socket_path)

    conn = UnixConnection("docker", timeout=timeout)
    try:
        conn.request(method, path, headers={"Content-Length": "0"} if method == "POST" else {})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = body.decode("utf-8", "replace")
    return response.status, parsed


def container_state(config: dict[str, Any]) -> dict[str, Any] | None:
    """The notebook container's State (None: no such container); raises OSError when
    Docker does not answer."""
    name = urllib.parse.quote(config["container"], safe="")
    status, body = docker_request(config["docker_socket"], "GET", f"/containers/{name}/json", 10)
    if status == 404:
        return None
    if status != 200 or not isinstance(body, dict):
        raise OSError(f"Docker answered {status} for container {config['container']}")
    return body.get("State") or {}


def parse_docker_time(text: str) -> float | None:
    # 2026-11-27T07:37:24.123456789Z: Python wants at most 6 fraction digits.
    if not text or text.startswith("0001-"):
        return None
    head, _, frac = text.rstrip("Z").partition(".")
    stamp = dt.datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return stamp.timestamp() + (float(f"0.{frac}") if frac else 0.0)


def started_at(config: dict[str, Any]) -> tuple[float | None, bool]:
    """(when the workbench started, whether it runs now). aws: the instance's boot (compute
    billing starts there); local: the notebook container's start."""
    if config["target"] == "aws":
        return boot_time(config["proc_root"]), True
    state = container_state(config)
    if state is None:
        return None, False
    return parse_docker_time(state.get("StartedAt", "")), bool(state.get("Running"))


# ---------------------------------------------------------------- outputs


def unfetched_outputs(notebook_home: str) -> list[str]:
    """Run directories under outputs/ with neither `.fetched` nor `.uploaded` (in S3), or
    changed after the newer of the two."""
    root = os.path.join(notebook_home, "outputs")
    try:
        entries = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    pending = []
    for entry in entries:
        path = os.path.join(root, entry)
        if entry.startswith(".") or not os.path.isdir(path):
            if not entry.startswith(".") and os.path.isfile(path):
                pending.append(entry)
            continue
        marks = []
        for marker in _MARKERS:
            try:
                marks.append(os.stat(os.path.join(path, marker)).st_mtime)
            except FileNotFoundError:
                continue
        if not marks:
            if any(True for _ in _files(path)):
                pending.append(entry)
            continue
        fetched = max(marks)
        if any(mtime > fetched for _, mtime in _files(path)):
            pending.append(entry)
    return pending


def _files(path: str):
    for dirpath, _, filenames in os.walk(path):
        for filename in filenames:
            if filename in _MARKERS:
                continue
            try:
                yield filename, os.stat(os.path.join(dirpath, filename)).st_mtime
            except FileNotFoundError:
                continue


# ---------------------------------------------------------------- the action


def resolve_action(policy: dict[str, Any], unfetched: list[str]) -> tuple[str, str]:
    """(what to do, why): stop, terminate, stop-api or refuse. Pure.

    On aws powering the instance off does what its launch fixed (poweroff_behavior).
    Where that is terminate, and either stop was asked or outputs are not fetched (unless
    terminate_unfetched), the instance stops instead through EC2's API (stop-api, with
    stop_command: its instance profile may stop only its own instance). Without
    stop_command it cannot: the action is refused, and the instance keeps running.
    """
    wanted = policy["action"]
    if policy["target"] == "local":
        note = (
            ""
            if wanted == "stop"
            else " (terminate on local stops the container; outputs stay on the host)"
        )
        return "stop", f"stop the notebook container{note}"
    behavior = policy["poweroff_behavior"]
    if behavior == "stop":
        note = (
            ""
            if wanted == "stop"
            else " (terminate is not possible from inside: the instance was launched to stop on shutdown)"
        )
        return "stop", f"power off; the instance stops{note}"
    if wanted == "stop":
        why = (
            "powering off this instance terminates it (launched with shutdown behaviour terminate)"
        )
    elif unfetched and not policy.get("terminate_unfetched"):
        why = f"terminating would delete {len(unfetched)} output(s) not fetched ({', '.join(unfetched[:5])})"
    else:
        return "terminate", "power off; the instance terminates"
    if policy.get("stop_command"):
        return "stop-api", f"{why}: the instance stops instead (EC2's API) and keeps its volume"
    if wanted == "stop":
        return (
            "refuse",
            f"stop refused: {why}; stop it from the control node with playbooks/stop.yml",
        )
    return "refuse", (
        f"terminate refused: {why}; fetch them (playbooks/run.yml or teardown.yml), "
        "or set autostop_terminate_unfetched"
    )


def hard_deadline(policy: dict[str, Any], started: float | None) -> float | None:
    if not policy["max_seconds"] or started is None:
        return None
    return started + policy["max_seconds"]


def decide_hard(policy: dict[str, Any], now: float, started: float | None, unfetched: list[str]):
    """(act?, action, why) for the hard limit alone. Pure."""
    deadline = hard_deadline(policy, started)
    if deadline is None or now < deadline:
        return False, "none", "within the hard limit"
    action, why = resolve_action(policy, unfetched)
    return (
        action != "refuse",
        action,
        f"hard limit of {policy['max_seconds'] / 3600:g} h reached: {why}",
    )


def perform(config: dict[str, Any], action: str) -> str:
    """Carry the action out; returns what was done."""
    if config["target"] == "local":
        name = urllib.parse.quote(config["container"], safe="")
        status, body = docker_request(
            config["docker_socket"], "POST", f"/containers/{name}/stop?t=30", 90
        )
        if status not in (204, 304):
            raise OSError(f"docker stop {config['container']}: HTTP {status} {body}")
        return f"stopped container {config['container']}"
    if action == "stop-api":
        done = subprocess.run(
            config["stop_command"], capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise OSError(
                f"stopping the instance through EC2's API failed ({tail[0]}); it keeps running"
            )
        return f"stopped the instance through EC2's API: {done.stdout.strip()}"
    subprocess.run(config["poweroff_command"], check=True, timeout=120)
    return f"ran {' '.join(config['poweroff_command'])} ({action})"


def fingerprint(config_path: str) -> str:
    digest = hashlib.sha256()
    here = os.path.dirname(os.path.abspath(__file__))
    for path in (
        config_path,
        os.path.join(here, "wyvern_hardstop.py"),
        os.path.join(here, "wyvern_autostop.py"),
    ):
        try:
            with open(path, "rb") as handle:
                digest.update(handle.read())
        except FileNotFoundError:
            digest.update(b"-")
    return digest.hexdigest()


# ---------------------------------------------------------------- hard-limit entry point


def hard_tick(config: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    started, running = started_at(config)
    result: dict[str, Any] = {
        "checked_at": now,
        "started_at": started,
        "deadline": hard_deadline(config, started),
    }
    if not running:
        result["verdict"] = "not running"
        return result
    unfetched = unfetched_outputs(config["notebook_home"])
    act, action, why = decide_hard(config, now, started, unfetched)
    result.update(
        verdict="act" if act else ("refuse" if action == "refuse" else "within"), reason=why
    )
    if action != "none":
        log(config, "hardstop", why)
    if act:
        result["done"] = perform(config, action)
        log(config, "hardstop", result["done"])
    write_json(os.path.join(config["state_dir"], "hardstop.json"), result)
    return result


def run_loop(config_path: str, tick, who: str) -> int:
    """Run tick(config) every interval until the config file or the notebook's folder goes
    away (a workbench removed without teardown leaves no watcher behind), or a signal."""
    stop = {"now": False}

    def handle(signum: int, frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    while not stop["now"]:
        if not os.path.exists(config_path):
            return 0
        config = load_config(config_path)
        if not os.path.isdir(config["notebook_home"]):
            return 0
        result: Any = None
        try:
            result = tick(config)
        except Exception as exc:
            log(config, who, f"tick failed: {type(exc).__name__}: {exc}")
        wait = float(config["interval_seconds"])
        act_at = result.get("act_at") if isinstance(result, dict) else None
        if result and result.get("verdict") in ("idle", "warn") and act_at:
            # Wake when the window ends rather than up to one interval later (a hair
            # after it, so the next tick never acts early).
            wait = min(wait, max(0.05, act_at + 0.05 - time.time()))
        deadline = time.monotonic() + wait
        while not stop["now"] and time.monotonic() < deadline:
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--loop", action="store_true", help="run every interval (no systemd)")
    args = parser.parse_args(argv)
    if args.loop:
        return run_loop(args.config, hard_tick, "hardstop")
    print(json.dumps(hard_tick(load_config(args.config))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
