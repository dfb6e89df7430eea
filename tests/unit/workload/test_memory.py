"""The memory a run may use: the cgroup's limit (v1 or v2, nested) before the host's."""

from __future__ import annotations

from pathlib import Path

import pytest
from transfer_learning import memory


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(memory, "CGROUP_ROOT", tmp_path / "cgroup")
    monkeypatch.setattr(memory, "PROC", tmp_path / "proc")
    _write(tmp_path / "proc" / "meminfo", "MemTotal: 9000000 kB\nMemAvailable: 8000000 kB\n")
    return tmp_path


def test_cgroup_v2_limit_minus_anonymous_use(fake: Path) -> None:
    _write(fake / "cgroup" / "cgroup.controllers", "cpu memory\n")
    _write(fake / "cgroup" / "memory.max", "3000000000\n")
    _write(fake / "cgroup" / "memory.stat", "anon 1000000000\nfile 5000000000\n")
    _write(fake / "proc" / "self" / "cgroup", "0::/\n")
    mem = memory.available()
    assert mem.available == 2_000_000_000  # page cache ("file") is reclaimable: not counted
    assert "memory.max" in mem.source


def test_cgroup_v1_nested_group_without_namespace(fake: Path) -> None:
    root = fake / "cgroup" / "memory"
    _write(root / "memory.limit_in_bytes", "9223372036854771712\n")  # v1's "no limit"
    _write(root / "bench" / "memory.limit_in_bytes", "2000000000\n")
    _write(root / "bench" / "memory.stat", "total_rss 500000000\n")
    _write(fake / "proc" / "self" / "cgroup", "4:memory:/bench\n1:cpu:/\n")
    mem = memory.available()
    assert mem.available == 1_500_000_000
    assert "bench/memory.limit_in_bytes" in mem.source


def test_no_limit_means_the_host(fake: Path) -> None:
    _write(fake / "cgroup" / "cgroup.controllers", "memory\n")
    _write(fake / "cgroup" / "memory.max", "max\n")
    _write(fake / "proc" / "self" / "cgroup", "0::/\n")
    mem = memory.available()
    assert mem.available == 8_000_000 * 1024
    assert mem.source == "/proc/meminfo MemAvailable"
