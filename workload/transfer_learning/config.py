"""Every knob of a run (`TrainConfig`), its checks, and run ids."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from transfer_learning.errors import WorkloadError

# A mismatch in any of these makes a checkpoint's continuation a different experiment.
RESUME_KEYS = ("mode", "image_size", "batch_size", "seed", "limit", "lr", "augment")


@dataclass
class TrainConfig:
    """Every knob of a run; the CLI and the notebook both build one of these."""

    data: str
    output_dir: str = "outputs"
    run_id: str | None = None
    weights: str = "imagenet"
    mode: str = "finetune"
    epochs: int = 10
    image_size: int = 224
    limit: int | None = None
    batch_size: int = 32
    workers: int = 2
    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    resume: bool = False
    # The tutorial's lr 0.001 at batch 4, scaled linearly with the batch size.
    lr: float | None = None
    momentum: float = 0.9
    step_size: int = 7
    gamma: float = 0.1
    # None: augment when fine-tuning, not when extracting features (so they can be cached).
    augment: bool | None = None
    amp: bool = True
    channels_last: bool | None = None  # None: channels_last on CUDA, contiguous on CPU
    progress: bool | None = None
    # Decoded images: "memory" (fast), "disk" (a cache file read per batch, for data sets
    # larger than memory) or "auto" (memory where it fits the memory actually available).
    data_store: str = "auto"
    cache_dir: str | None = None

    def resolved(self) -> TrainConfig:
        cfg = copy.copy(self)
        if cfg.lr is None:
            cfg.lr = 0.001 * cfg.batch_size / 4
        if cfg.augment is None:
            cfg.augment = cfg.mode == "finetune"
        return cfg


def validate(cfg: TrainConfig) -> None:
    checks = [
        (cfg.mode in ("finetune", "feature-extract"), "--mode must be finetune or feature-extract"),
        (cfg.epochs >= 1, "--epochs must be at least 1"),
        (cfg.image_size >= 16, "--image-size must be at least 16"),
        (cfg.limit is None or cfg.limit >= 2, "--limit must be at least 2"),
        (cfg.batch_size >= 1, "--batch-size must be at least 1"),
        (cfg.workers >= 0, "--workers must be 0 or more"),
        (cfg.device in ("auto", "cpu", "cuda"), "--device must be auto, cpu or cuda"),
        (cfg.lr is None or cfg.lr > 0, "--lr must be positive"),
        (cfg.step_size >= 1, "--step-size must be at least 1"),
        (
            0 < cfg.gamma <= 1,
            f"--gamma must be in (0, 1] (the factor of each lr step), not {cfg.gamma}",
        ),
        (cfg.momentum >= 0, "momentum must be 0 or more"),
        (cfg.data_store in ("auto", "memory", "disk"), "--data-store must be auto, memory or disk"),
    ]
    for ok, message in checks:
        if not ok:
            raise WorkloadError(message)


def new_run_id() -> str:
    """UTC timestamp down to microseconds: ids sort by time."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")


def cfg_dict(cfg: TrainConfig) -> dict[str, Any]:
    return asdict(cfg)
