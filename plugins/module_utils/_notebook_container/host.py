# Copyright: Wyvern workbench team
# Apache-2.0
"""Files on the managed host: the token file, the container's read-only copy of it, the
port file; and whether a port is free. Check mode reports what would change, writes nothing.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from typing import Any

from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_container.spec import (
    token_mount_path,
)


def ensure_token(token: str | None, token_file: str, check_mode: bool) -> tuple[str, bool]:
    """Return (token, changed). An explicit token is written to the file too, so
    tools that read the file (tunnel, run) always see the live one."""
    current = None
    if os.path.exists(token_file):
        with open(token_file, encoding="utf-8") as handle:
            current = handle.read().strip() or None
    wanted = token or current or secrets.token_urlsafe(32)
    mode_ok = current is None or (os.stat(token_file).st_mode & 0o777) == 0o600
    if wanted == current and mode_ok:
        return wanted, False
    if not check_mode:
        directory = os.path.dirname(os.path.abspath(token_file))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(wanted + "\n")
        os.chmod(token_file, 0o600)
    return wanted, True


def ensure_token_mount(token: str, token_file: str, check_mode: bool) -> bool:
    """Make the container's copy of the token; True when it had to be (re)written.

    The file is 0444 inside a 0700 directory of the module's user (root on a managed
    host): the container's user reads it through the bind mount, host accounts (even
    the one whose uid equals the container user's) cannot reach it. It is written in
    place, without a newline (Jupyter does not strip it), so a running container's bind
    mount keeps seeing it.
    """
    path = token_mount_path(token_file)
    directory = os.path.dirname(path)
    try:
        with open(path, encoding="utf-8") as handle:
            current: str | None = handle.read()
        modes_ok = (os.stat(directory).st_mode & 0o777) == 0o700 and (
            os.stat(path).st_mode & 0o777
        ) == 0o444
    except OSError:
        current, modes_ok = None, False
    if current == token and modes_ok:
        return False
    if not check_mode:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        if os.path.exists(path):
            os.chmod(path, 0o600)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(token)
        os.chmod(path, 0o444)
    return True


def remove_token_mount(token_file: str) -> None:
    path = token_mount_path(token_file)
    if os.path.exists(path):
        os.chmod(path, 0o600)
        os.unlink(path)
    if os.path.isdir(os.path.dirname(path)) and not os.listdir(os.path.dirname(path)):
        os.rmdir(os.path.dirname(path))


def read_port_file(port_file: str | None) -> int | None:
    if not port_file:
        return None
    try:
        with open(port_file, encoding="ascii") as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and 1 <= int(text) <= 65535 else None


def write_port_file(port_file: str, port: int) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(port_file)), exist_ok=True)
    with open(port_file, "w", encoding="ascii") as handle:
        handle.write(f"{port}\n")


def port_is_free(address: str, port: int) -> bool:
    host = "0.0.0.0" if address in ("", "::") else address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def probe_record_path(token_file: str) -> str:
    """Where the last good probe of the container is kept (next to the token file)."""
    return f"{token_file}.probe.json"


def read_probe_record(path: str, key: dict[str, Any]) -> dict[str, Any] | None:
    """The probe recorded for exactly this ``key``, or None (no record, another key, unreadable)."""
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != key:
        return None
    probe = record.get("probe")
    return probe if isinstance(probe, dict) else None


def write_probe_record(path: str, key: dict[str, Any], probe: dict[str, Any]) -> None:
    """Keep the last good probe (versions and the GPU answer; no secret), 0600 like the token."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"key": key, "probe": probe}, handle, sort_keys=True)
    os.replace(tmp, path)
