"""Benchmark: site.yml to a healthy notebook, and its no-op rerun, against the floor.

The floor is what a bare `docker run` of the same image costs: start the container,
poll Jupyter's API until it first answers, then the same PyTorch probe by `docker exec`.
Each round measures all three on this machine, one after the other; the report gives the
median of the rounds (default 3) and their spread (min-max), the ratios taken per round.
Goal: the no-op rerun of site.yml within 2x the floor (median of the rounds' ratios).
`--profile` also prints the slowest tasks of the last no-op rerun (profile_tasks).

    .venv/bin/python scripts/bench_playbook.py [--name wb-bench] [--rounds 3] [--json] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
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


GOAL_RATIO = 2.0
# profile_tasks' lines: "Task name ------ 1.23s"
PROFILE_LINE = re.compile(r"^(?P<task>.+?) -{3,} (?P<seconds>[0-9.]+)s$")


def playbook(name: str, port: int, *playbooks: str, profile: list[str] | None = None) -> float:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    if profile is not None:
        env["ANSIBLE_CALLBACKS_ENABLED"] = "ansible.posix.profile_tasks"
        env["PROFILE_TASKS_TASK_OUTPUT_LIMIT"] = "25"
    start = time.perf_counter()
    for book in playbooks:
        proc = subprocess.run(
            [
                "ansible-playbook",
                book,
                "-e",
                json.dumps({"workbench_name": name, "notebook_port": port}),
            ],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.PIPE if profile is not None else subprocess.DEVNULL,
            text=True,
        )
        if profile is not None:
            profile += [
                line.strip()
                for line in proc.stdout.splitlines()
                if PROFILE_LINE.match(line.strip())
            ]
    return time.perf_counter() - start


def spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    client = docker.from_env()
    port = free_port()

    # Warm-up: builds the image if needed, so the timed runs measure start-up only.
    playbook(args.name, port, "site.yml")
    rounds: list[dict[str, float]] = []
    profile: list[str] = []
    try:
        for index in range(args.rounds):
            playbook(args.name, port, "playbooks/teardown.yml")
            cold = playbook(args.name, port, "site.yml")
            last = index == args.rounds - 1
            noop = playbook(
                args.name, port, "site.yml", profile=profile if args.profile and last else None
            )
            bare = floor(client, client.containers.get(args.name), free_port())
            rounds.append({"floor": bare, "cold": cold, "noop": noop})
    finally:
        playbook(args.name, port, "playbooks/teardown.yml")

    floors = [r["floor"] for r in rounds]
    colds = [r["cold"] for r in rounds]
    noops = [r["noop"] for r in rounds]
    noop_ratios = [r["noop"] / r["floor"] for r in rounds]
    cold_ratios = [r["cold"] / r["floor"] for r in rounds]
    noop_ratio = statistics.median(noop_ratios)
    result = {
        "rounds": len(rounds),
        "floor_docker_run_s": spread(floors),
        "site_to_healthy_s": spread(colds),
        "site_noop_rerun_s": spread(noops),
        "site_to_healthy_ratio": spread(cold_ratios),
        "noop_rerun_ratio": spread(noop_ratios),
        f"goal_noop_within_{GOAL_RATIO:g}x": noop_ratio <= GOAL_RATIO,
        "per_round": [{k: round(v, 2) for k, v in r.items()} for r in rounds],
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"median of {len(rounds)} rounds (min-max)")
        print(f"{'what':<34}{'seconds':>22}{'x floor':>22}")
        for label, values, ratios in (
            ("docker run + probe (floor)", floors, [1.0] * len(rounds)),
            ("site.yml to healthy notebook", colds, cold_ratios),
            ("site.yml no-op rerun", noops, noop_ratios),
        ):
            s, r = spread(values), spread(ratios)
            print(
                f"{label:<34}{s['median']:>8.2f} ({s['min']:.2f}-{s['max']:.2f})"
                f"{r['median']:>8.2f} ({r['min']:.2f}-{r['max']:.2f})"
            )
        met = "met" if noop_ratio <= GOAL_RATIO else "NOT met"
        print(f"goal (no-op rerun <= {GOAL_RATIO:g}x floor, median): {met}")
    if profile:
        print("\nslowest tasks of the last no-op rerun (profile_tasks):")
        print("\n".join(profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
