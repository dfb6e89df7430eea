"""A real OpenSSH server on loopback that stands in for an EC2 instance in e2e tests."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.moto import free_port

SSHD = "/usr/sbin/sshd"


@dataclass
class SshServer:
    host: str
    port: int
    user: str
    log: Path
    host_key: str  # the public host key, "ssh-ed25519 AAAA..."
    authorized_keys: Path  # sshd reads it at each login, so a test may write it later


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port}")


@contextmanager
def ssh_server(workdir: Path, authorized_key: Path) -> Iterator[SshServer]:
    """Run sshd on a free loopback port, accepting only ``authorized_key`` for this user."""
    workdir.mkdir(parents=True, exist_ok=True)
    host_key = workdir / "ssh_host_ed25519_key"
    if not host_key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True
        )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    port = free_port()
    log = workdir / "sshd.log"
    config = workdir / "sshd_config"
    config.write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {workdir / "sshd.pid"}
AuthorizedKeysFile {authorized_key}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
AllowTcpForwarding yes
Subsystem sftp internal-sftp
"""
    )
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=log.open("wb"))
    try:
        _wait_for_port(port, proc)
        public = " ".join(host_key.with_suffix(".pub").read_text().split()[:2])
        user = pwd.getpwuid(os.getuid()).pw_name
        yield SshServer("127.0.0.1", port, user, log, public, authorized_key)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
