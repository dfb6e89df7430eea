"""torchrun with more processes than GPUs: ranks share the GPUs and use gloo, not NCCL.

Seen on an H200 (BENCHMARKS.md, CUDA): with `--nproc-per-node 2` on one GPU, rank 1 asked
for cuda:1 ("invalid device ordinal"), and NCCL refuses two ranks on one GPU ("Duplicate
GPU detected"). Here the GPU count is faked, so the choice is checked without a GPU.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.distributed as dist
from transfer_learning import distributed


@pytest.fixture
def fake_gpus(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: seen.setdefault("device", index))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(
        dist, "init_process_group", lambda backend, **_: seen.setdefault("backend", backend)
    )
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    for name, value in {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    return seen


def test_two_ranks_on_one_gpu_share_it_over_gloo(
    monkeypatch: pytest.MonkeyPatch, fake_gpus: dict[str, Any]
) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with distributed.process_group("cuda") as d:
        assert fake_gpus["backend"] == "gloo"
        assert distributed.select_device("cuda", d.local_rank) == torch.device("cuda", 0)
    assert fake_gpus["device"] == 0


def test_one_gpu_per_rank_keeps_nccl(
    monkeypatch: pytest.MonkeyPatch, fake_gpus: dict[str, Any]
) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with distributed.process_group("cuda") as d:
        assert fake_gpus["backend"] == "nccl"
        assert distributed.select_device("cuda", d.local_rank) == torch.device("cuda", 1)
