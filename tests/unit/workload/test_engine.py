"""Engine pieces that need no data: device choice, config checks, batches, run ids."""

from __future__ import annotations

import time

import pytest
import torch
from transfer_learning.engine import Batcher, TrainConfig, new_run_id, select_device, validate
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


def test_batcher_crops_normalises_and_replays() -> None:
    batcher = Batcher(TrainConfig(data="x", image_size=8), torch.device("cpu"))
    images = torch.randint(0, 256, (5, 3, 10, 10), dtype=torch.uint8)
    val = batcher(images, augment=False)
    assert val.shape == (5, 3, 8, 8)
    assert val.is_contiguous(memory_format=torch.channels_last)
    expected = (images[0, 0, 1, 1].float() / 255 - 0.485) / 0.229
    assert val[0, 0, 0, 0].item() == pytest.approx(expected.item(), rel=1e-5)
    a = batcher(images, augment=True, generator=torch.Generator().manual_seed(7))
    b = batcher(images, augment=True, generator=torch.Generator().manual_seed(7))
    c = batcher(images, augment=True, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
