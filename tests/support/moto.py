"""A real EC2 API on loopback: moto's server mode in a child process."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from tests.support.ports import reserved_port

# Images that moto serves for AMI lookups, in the shape of AWS's describe_images.
AMIS_FILE = Path(__file__).with_name("moto_amis.json")
ROOT = Path(__file__).resolve().parents[2]

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    def __init__(self, url: str, log: Path | None = None, faults: Path | None = None) -> None:
        self.url = url
        self.log = log  # the server's own log (every request), for a failing test to read
        # Read by the server on every RunInstances (tests.support.moto_server): what EC2
        # refuses that moto never would, such as spot capacity in some zones.
        self.faults = faults

    def reset(self) -> None:
        requests.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()
        self.set_faults()

    def set_faults(self, **faults: Any) -> None:
        """E.g. spot_refused_zones={"us-east-1a": "SpotMaxPriceTooLow"}; none clears them."""
        if self.faults is None:
            raise RuntimeError("this moto server was started without a faults file")
        self.faults.write_text(json.dumps(faults))

    def client(self, service: str = "ec2", region: str = "us-east-1"):
        import boto3

        return boto3.client(
            service,
            region_name=region,
            endpoint_url=self.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            aws_session_token="testing",
        )

    @property
    def env(self) -> dict[str, str]:
        """Environment for a child process (ansible-playbook) that talks to this server."""
        return {**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": self.url}


def _tail(path: Path, size: int = 2000) -> str:
    return path.read_bytes()[-size:].decode(errors="replace")


@contextmanager
def moto_server(amis_file: Path = AMIS_FILE, log_dir: Path | None = None) -> Iterator[MotoServer]:
    """Start moto's server on a free loopback port; its log goes to a file, never a pipe.

    The server logs every request; in a pipe that nobody reads it would block after about
    64 KiB of log, and every later AWS call with it.
    """
    with reserved_port() as port:  # held while the server runs: no other test takes it
        yield from _moto_server(port, amis_file, log_dir)


def _moto_server(port: int, amis_file: Path, log_dir: Path | None) -> Iterator[MotoServer]:
    env = {**os.environ, **FAKE_CREDENTIALS}
    # tests.support.moto_server is imported from the checkout.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if amis_file.exists():
        # Read once at start-up, so it must be in the server's environment.
        env["MOTO_AMIS_PATH"] = str(amis_file)
    log_path = Path(tempfile.mkdtemp(prefix="moto-", dir=log_dir)) / "moto.log"
    faults = log_path.parent / "faults.json"
    faults.write_text("{}")
    env["WYVERN_MOTO_FAULTS"] = str(faults)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.moto_server", "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited: {_tail(log_path)}")
            try:
                requests.get(f"{url}/moto-api/", timeout=2)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto server did not answer within 60 s") from None
                time.sleep(0.2)
        yield MotoServer(url, log_path, faults)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(log_path.parent, ignore_errors=True)


def load_amis(path: Path = AMIS_FILE) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []
