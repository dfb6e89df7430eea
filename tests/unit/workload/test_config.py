"""Pieces of a run that need no data: config checks and defaults, device choice, run ids."""

from __future__ import annotations

import time

import pytest
import torch
from transfer_learning.config import TrainConfig, new_run_id, validate
from transfer_learning.distributed import select_device
from transfer_learning.errors import WorkloadError


def test_cuda_without_a_gpu_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(WorkloadError, match="no CUDA device"):
        select_device("cuda")
    assert select_device("auto") == torch.device("cpu")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": 0}, "--epochs"),
        ({"mode": "linear-probe"}, "--mode"),
        ({"image_size": 8}, "--image-size"),
        ({"batch_size": 0}, "--batch-size"),
        ({"limit": 1}, "--limit"),
        ({"device": "tpu"}, "--device"),
        ({"gamma": -5}, "--gamma"),
        ({"gamma": 0}, "--gamma"),
        ({"step_size": 0}, "--step-size"),
    ],
)
def test_validate_names_the_option(change: dict, message: str) -> None:
    with pytest.raises(WorkloadError, match=message):
        validate(TrainConfig(data="x", **change))


def test_resolved_defaults_follow_the_tutorial() -> None:
    cfg = TrainConfig(data="x", batch_size=32, mode="feature-extract").resolved()
    assert cfg.lr == pytest.approx(0.008)  # 0.001 at batch 4, scaled linearly
    assert cfg.augment is False  # so backbone features can be cached
    assert TrainConfig(data="x").resolved().augment is True


def test_run_ids_sort_by_time() -> None:
    first = new_run_id()
    time.sleep(0.002)
    second = new_run_id()
    assert first < second
    assert "/" not in first
