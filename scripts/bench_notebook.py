#!/usr/bin/env python3
"""Benchmark: the module's seconds_to_healthy against an independent poller, same runs.

For each run the container is removed, a poller thread starts hitting Jupyter's
/api/status with the token every 20 ms, and wyvern.workbench.notebook_container starts
the container through ansible (as a user would). The poller's time is measured from the
module's own start call (``started_at``), so both columns share one origin.
Goal: the module is within 0.5 s of the poller.

    .venv/bin/python scripts/bench_notebook.py [--runs 3] [--image NAME:TAG]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NAME = "wyvern-bench-notebook"


def poll(url: str, token: str, stop: threading.Event, found: list[float]) -> None:
    request = urllib.request.Request(
        f"{url}/api/status", headers={"Authorization": f"token {token}"}
    )
    while not stop.is_set():
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                if response.status == 200:
                    found.append(time.time())
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.02)


def ansible_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
    )
    return env


def run_module(args: dict) -> dict:
    proc = subprocess.run(
        ["ansible", "localhost", "-c", "local", "-m", "wyvern.workbench.notebook_container", "-a", json.dumps(args),
         "-e", "ansible_python_interpreter={{ ansible_playbook_python }}"],
        cwd=ROOT, env=ansible_env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--image", help="notebook image; default: build/find it with the role")
    args = parser.parse_args()

    image = args.image
    if not image:
        from tests.support.notebook_image import build_notebook_image

        env = ansible_env()
        env.pop("ANSIBLE_STDOUT_CALLBACK")
        image = build_notebook_image(ROOT, env)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token = secrets.token_urlsafe(32)
    token_file = f"/tmp/{NAME}.token"
    base = {"name": NAME, "image": image, "port": port, "token": token, "token_file": token_file}

    rows = []
    try:
        for run in range(1, args.runs + 1):
            run_module({"name": NAME, "state": "absent"})
            stop, found = threading.Event(), []
            poller = threading.Thread(
                target=poll, args=(f"http://127.0.0.1:{port}", token, stop, found)
            )
            poller.start()
            result = run_module(base)
            poller.join(timeout=120)
            stop.set()
            if result.get("failed") or not found:
                print(f"run {run}: failed: {result.get('msg')}", file=sys.stderr)
                return 1
            module_s = result["seconds_to_healthy"]
            poller_s = found[0] - result["started_at"]
            rows.append((run, module_s, poller_s, module_s - poller_s))
    finally:
        run_module({"name": NAME, "state": "absent"})
        Path(token_file).unlink(missing_ok=True)

    print(f"image {image}, module poll interval 0.2 s, independent poller every 0.02 s")
    print(
        f"{'run':>3}  {'module seconds_to_healthy':>26}  {'poller first 200':>17}  {'module - poller':>15}"
    )
    for run, module_s, poller_s, delta in rows:
        print(f"{run:>3}  {module_s:>26.3f}  {poller_s:>17.3f}  {delta:>+15.3f}")
    worst = max(abs(r[3]) for r in rows)
    print(
        f"worst |module - poller| = {worst:.3f} s (goal <= 0.5 s): {'OK' if worst <= 0.5 else 'MISSED'}"
    )
    return 0 if worst <= 0.5 else 2


if __name__ == "__main__":
    raise SystemExit(main())
