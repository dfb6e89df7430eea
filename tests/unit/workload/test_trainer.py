"""Trainer pieces that need no training: batches, the newest run to resume."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transfer_learning.trainer import _latest_resumable, train_batches


def test_a_last_batch_of_one_joins_the_one_before() -> None:
    sizes = [len(b) for b in train_batches(torch.arange(33), 16)]
    assert sizes == [16, 17]
    assert [len(b) for b in train_batches(torch.arange(32), 16)] == [16, 16]
    assert [len(b) for b in train_batches(torch.arange(3), 1)] == [1, 1, 1]
    assert torch.equal(torch.cat(train_batches(torch.arange(33), 16)), torch.arange(33))


def test_resume_picks_the_newest_checkpoint_not_the_last_name(tmp_path: Path) -> None:
    for name, mtime in (("zz-old", 1_000_000), ("aa-new", 2_000_000)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "checkpoint.pt").write_bytes(b"")
        os.utime(tmp_path / name / "checkpoint.pt", (mtime, mtime))
    assert _latest_resumable(tmp_path) == "aa-new"


def test_mixed_precision_only_where_the_device_computes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from transfer_learning import precision
    from transfer_learning.data import Batcher

    cpu = torch.device("cpu")
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    assert precision.mixed_precision(cpu) is None  # bf16 would be emulated: float32
    assert Batcher(32, cpu).memory_format == torch.contiguous_format
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert precision.mixed_precision(cpu) is torch.bfloat16
    assert precision.mixed_precision(cpu, enabled=False) is None  # --no-amp
    # oneDNN's bf16 kernels are faster in channels_last; float32 ones were not.
    assert Batcher(32, cpu).memory_format == torch.channels_last
    assert Batcher(32, cpu, amp=False).memory_format == torch.contiguous_format
    # A torch without these probes: float32, not an AttributeError.
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert precision.mixed_precision(cpu) is None
