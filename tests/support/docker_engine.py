"""Make sure a Docker engine answers, starting one where we are allowed to."""

from __future__ import annotations

import shutil
import subprocess
import time

import docker


def ensure_docker_engine(timeout: float = 60) -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
        return client
    except docker.errors.DockerException:
        pass
    if shutil.which("dockerd") is None:
        raise RuntimeError("no Docker engine: run `make setup` (it installs docker.io)")
    # No systemd on CI sandboxes: start the daemon in the background ourselves.
    with open("/var/log/dockerd.log", "ab") as log:
        subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client = docker.from_env()
            client.ping()
            return client
        except docker.errors.DockerException:
            time.sleep(0.5)
    raise RuntimeError("dockerd did not answer; see /var/log/dockerd.log")
