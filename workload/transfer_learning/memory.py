"""Memory this process may use: its cgroup's limit (v2 or v1, nested ones included) or the host's.

The container's limit, not the host's total, is what the kernel enforces: a data set that fits
the host but not the container gets the run OOM-killed.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC = Path("/proc")
UNLIMITED = 1 << 60  # v1 writes "no limit" as a number near 2**63


@dataclass
class Memory:
    available: int  # bytes this process can still allocate without being killed
    source: str  # where the figure comes from, for the run's record


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value < UNLIMITED else None


def _stat(path: Path, key: str) -> int | None:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return None


def _cgroup_dirs(proc_cgroup: str) -> list[tuple[str, Path]]:
    """(version, directory) from the process's own cgroup up to the hierarchy's root."""
    found: list[tuple[str, Path]] = []
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controllers == "" and (CGROUP_ROOT / "cgroup.controllers").exists():
            version, base = "v2", CGROUP_ROOT
        elif "memory" in controllers.split(","):
            version, base = "v1", CGROUP_ROOT / "memory"
        else:
            continue
        own = base / rel.lstrip("/")
        # Inside a container with its own cgroup namespace the path is "/" and the mount is
        # already the container's cgroup; without one, the path names a directory below it.
        dirs = [own, *own.parents] if own.is_dir() else [base]
        found += [(version, d) for d in dirs if d == base or base in d.parents]
    return found


def cgroup_free() -> tuple[int, str] | None:
    """The tightest cgroup limit on this process minus its non-reclaimable use, and its file."""
    try:
        proc_cgroup = (PROC / "self" / "cgroup").read_text()
    except OSError:
        return None
    best: tuple[int, str] | None = None
    for version, d in _cgroup_dirs(proc_cgroup):
        if version == "v2":
            limit_file, used = d / "memory.max", _stat(d / "memory.stat", "anon")
        else:
            limit_file, used = d / "memory.limit_in_bytes", _stat(d / "memory.stat", "total_rss")
        limit = _read_int(limit_file)
        if limit is None:
            continue
        free = max(0, limit - (used or 0))
        if best is None or free < best[0]:
            best = (free, f"cgroup {version} {limit_file} = {limit}")
    return best


def mem_available() -> int | None:
    try:
        for line in (PROC / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available() -> Memory:
    """The smaller of the cgroup's headroom and the host's MemAvailable."""
    host = mem_available()
    group = cgroup_free()
    if group is not None and (host is None or group[0] <= host):
        return Memory(group[0], group[1])
    if host is not None:
        return Memory(host, "/proc/meminfo MemAvailable")
    return Memory(1 << 62, "unknown (no cgroup limit, no /proc/meminfo)")


def peak_rss() -> int:
    """This process's peak resident set size in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
