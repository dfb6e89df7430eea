"""Loopback ports for tests that hand a port to another process (Docker, sshd, moto).

Asking the OS for a free port (bind to 0) and closing the socket leaves a window in which
any other program may get the same port from the OS: the ephemeral range is where the OS
hands out ports to everyone. A reserved port is drawn from *below* that range, where the
OS never allocates on its own, and is held by an exclusive lock file for as long as the
test needs it, so two test processes on this machine (parallel runs, other worktrees)
never pick the same one. The consumer binds it itself; nothing else is racing for it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path

LOCK_DIR = Path(os.environ.get("WYVERN_TEST_PORT_LOCKS", "/tmp/wyvern-test-ports"))
FLOOR = 20000


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


@contextlib.contextmanager
def reserved_port(attempts: int = 200) -> Iterator[int]:
    """Yield a loopback TCP port that is free now and that no other test will take."""
    low, _ = _ephemeral_range()
    ceiling = max(FLOOR + 1000, low - 1)
    LOCK_DIR.mkdir(mode=0o777, parents=True, exist_ok=True)
    for _ in range(attempts):
        port = random.randint(FLOOR, ceiling)
        handle = open(LOCK_DIR / f"{port}.lock", "w")  # noqa: SIM115 - held while yielded
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        try:
            if not _bindable(port):
                continue
            yield port
            return
        finally:
            handle.close()  # closing drops the lock
    raise RuntimeError(f"no free loopback port between {FLOOR} and {ceiling}")
