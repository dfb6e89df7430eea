"""Benchmark: site.yml to a healthy notebook, and its no-op rerun, against the floor.

The floor is what a bare `docker run` of the same image costs: start the container,
poll Jupyter's API until it first answers, then the same PyTorch probe by `docker exec`.
Everything is measured in one run on this machine and printed side by side.
Goal: the no-op rerun of site.yml within 3x of the floor.

    .venv/bin/python scripts/bench_playbook.py [--name wb-bench] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import docker
import requests

ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import json, torch, torchvision; print(json.dumps({'torch': torch.__version__, "
    "'torchvision': torchvision.__version__, 'cuda': torch.version.cuda, "
    "'cuda_available': torch.cuda.is_available(), 'device_count': torch.cuda.device_count()}))"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def playbook(name: str, port: int, *playbooks: str) -> float:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    start = time.perf_counter()
    for book in playbooks:
        subprocess.run(
            [
                "ansible-playbook",
                book,
                "-e",
                json.dumps({"workbench_name": name, "notebook_port": port}),
            ],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return time.perf_counter() - start


def floor(client: docker.DockerClient, template, port: int) -> float:
    """A plain `docker run` of the same image and command, to Jupyter's first answer + probe."""
    config = template.attrs["Config"]
    # The token is a read-only mounted file (JUPYTER_TOKEN_FILE), never in the environment.
    token = (Path("/var/lib/wyvern") / template.name / "token").read_text().strip()
    start = time.perf_counter()
    container = client.containers.run(
        config["Image"],
        command=config["Cmd"],
        environment=config["Env"],
        volumes=template.attrs["HostConfig"]["Binds"],
        user=config.get("User") or None,
        ports={"8888/tcp": ("127.0.0.1", port)},
        detach=True,
        name=f"{template.name}-floor",
    )
    try:
        while True:
            try:
                answer = requests.get(
                    f"http://127.0.0.1:{port}/api/status", params={"token": token}, timeout=1
                )
                if answer.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        code, _ = container.exec_run(["python", "-c", PROBE])
        assert code == 0
        return time.perf_counter() - start
    finally:
        container.remove(force=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="wb-bench")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    client = docker.from_env()
    port = free_port()

    # Warm-up: builds the image if needed, so the timed runs measure start-up only.
    playbook(args.name, port, "site.yml")
    playbook(args.name, port, "playbooks/teardown.yml")
    cold = playbook(args.name, port, "site.yml")
    noop = playbook(args.name, port, "site.yml")
    template = client.containers.get(args.name)
    bare = floor(client, template, free_port())
    playbook(args.name, port, "playbooks/teardown.yml")

    result = {
        "floor_docker_run_s": round(bare, 2),
        "site_to_healthy_s": round(cold, 2),
        "site_noop_rerun_s": round(noop, 2),
        "site_to_healthy_ratio": round(cold / bare, 2),
        "noop_rerun_ratio": round(noop / bare, 2),
        "goal_noop_within_3x": noop <= 3 * bare,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'what':<34}{'seconds':>9}{'x floor':>9}")
        print(f"{'docker run + probe (floor)':<34}{bare:>9.2f}{1:>9.2f}")
        print(f"{'site.yml to healthy notebook':<34}{cold:>9.2f}{cold / bare:>9.2f}")
        print(f"{'site.yml no-op rerun':<34}{noop:>9.2f}{noop / bare:>9.2f}")
        print(
            f"goal (no-op rerun <= 3x floor): {'met' if result['goal_noop_within_3x'] else 'NOT met'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
