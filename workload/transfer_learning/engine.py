"""Training and evaluation: one device chosen once, cached data, exact resume, DDP."""

from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from transfer_learning.data import IMAGENET_MEAN, IMAGENET_STD, CachedData, cache_size, load_cached
from transfer_learning.errors import WorkloadError
from transfer_learning.model import backbone_features, build_model

CHECKPOINT = "checkpoint.pt"
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
    channels_last: bool = True
    progress: bool | None = None

    def resolved(self) -> TrainConfig:
        cfg = copy.copy(self)
        if cfg.lr is None:
            cfg.lr = 0.001 * cfg.batch_size / 4
        if cfg.augment is None:
            cfg.augment = cfg.mode == "finetune"
        return cfg


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    metrics: dict[str, Any]
    classes: list[str]
    model: nn.Module | None = field(default=None, repr=False)


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
    ]
    for ok, message in checks:
        if not ok:
            raise WorkloadError(message)


def select_device(name: str, local_rank: int = 0) -> torch.device:
    """Pick the device once; asking for CUDA where there is none is an error, not a CPU run."""
    if name == "cuda" and not torch.cuda.is_available():
        raise WorkloadError("--device cuda was asked for but no CUDA device is available")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        # More processes than GPUs (torchrun --nproc-per-node 2 on one GPU): ranks share them.
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> Dist:
    """Join the torchrun group when launched by torchrun (NCCL on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    # NCCL refuses two ranks on one GPU ("Duplicate GPU detected"): with more processes on
    # this node than GPUs, the ranks share the GPUs and talk over gloo instead.
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    nccl = use_cuda and local_world <= torch.cuda.device_count()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if nccl else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank)


def new_run_id() -> str:
    """UTC timestamp down to microseconds: ids sort by time."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")


def _broadcast(value: Any, d: Dist) -> Any:
    if d.world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _latest_resumable(output_dir: Path) -> str | None:
    runs = sorted(p.parent.name for p in output_dir.glob(f"*/{CHECKPOINT}"))
    return runs[-1] if runs else None


def _set_determinism(cfg: TrainConfig, device: torch.device) -> None:
    torch.manual_seed(cfg.seed)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    elif device.type == "cuda":
        # No autotuning: cuDNN's benchmark mode times every convolution again for each new
        # batch shape (full, last partial, validation), seconds in the first epoch of the
        # short runs this workload makes (BENCHMARKS.md, CUDA).
        torch.backends.cudnn.benchmark = False


class Batcher:
    """Turns cached uint8 images into normalised float batches on the device."""

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        self.size = cfg.image_size
        self.device = device
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255

    def __call__(
        self, images: torch.Tensor, augment: bool, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        side = images.shape[-1]
        s = self.size
        if augment:
            # Random crop + horizontal flip, drawn from the epoch's generator (exact resume).
            n = images.shape[0]
            offsets = torch.randint(0, side - s + 1, (n, 2), generator=generator).tolist()
            flips = torch.rand(n, generator=generator).lt(0.5).tolist()
            crops = []
            for img, (oy, ox), flip in zip(images, offsets, flips, strict=True):
                crop = img[:, oy : oy + s, ox : ox + s]
                crops.append(crop.flip(-1) if flip else crop)
            images = torch.stack(crops)
        else:
            o = (side - s) // 2
            images = images[:, :, o : o + s, o : o + s]
        images = images.to(self.device, non_blocking=True).float()
        return ((images - self.mean) / self.std).contiguous(memory_format=self.memory_format)


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _chunks(indices: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    for start in range(0, len(indices), size):
        yield indices[start : start + size]


def _pin(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    return t.pin_memory() if device.type == "cuda" else t


def _progress(cfg: TrainConfig, d: Dist, total: int, desc: str) -> Any:
    show = cfg.progress if cfg.progress is not None else sys.stderr.isatty()
    if not (show and d.main):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", leave=False)


@torch.inference_mode()
def extract_features(
    model: nn.Module, images: torch.Tensor, batcher: Batcher, batch_size: int, amp: bool
) -> torch.Tensor:
    """Frozen-backbone features of centre-cropped images, computed once."""
    model.eval()
    out = []
    for idx in _chunks(torch.arange(len(images)), batch_size):
        with _autocast(batcher.device, amp):
            out.append(backbone_features(model, batcher(images[idx], augment=False)).float())
    return torch.cat(out) if out else torch.empty(0, 512, device=batcher.device)


def _gather(values: list[int], d: Dist) -> list[int]:
    if d.world == 1:
        return values
    parts: list[list[int]] = [[] for _ in range(d.world)]
    dist.all_gather_object(parts, values)
    return [v for part in parts for v in part]


def _all_sum(values: list[float], d: Dist, device: torch.device) -> list[float]:
    if d.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


@torch.inference_mode()
def _evaluate(
    forward: Any, n: int, targets: torch.Tensor, batch_size: int, d: Dist, device: torch.device
) -> tuple[float, float, list[int], list[int]]:
    """Loss, accuracy and (targets, predictions) over the whole split, sharded by rank."""
    order = torch.arange(n)[d.rank :: d.world]
    loss_sum, preds, trues = 0.0, [], []
    for idx in _chunks(order, batch_size):
        logits = forward(idx).float()
        y = targets[idx].to(device, non_blocking=True)
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        preds += logits.argmax(1).tolist()
        trues += targets[idx].tolist()
    (loss_sum,) = _all_sum([loss_sum], d, device)
    preds, trues = _gather(preds, d), _gather(trues, d)
    acc = sum(p == t for p, t in zip(preds, trues, strict=True)) / max(1, len(trues))
    return loss_sum / max(1, len(trues)), acc, trues, preds


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to unpickle means the same thing to the user
        raise WorkloadError(
            f"cannot read checkpoint {path} ({exc.__class__.__name__}): delete it to start over"
        ) from None
    if not isinstance(ckpt, dict) or not {"model", "optimizer", "epoch"} <= ckpt.keys():
        raise WorkloadError(f"checkpoint {path} is not a transfer_learning checkpoint")
    return ckpt


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(cfg: TrainConfig) -> RunResult:
    """Run one training job and write its outputs (rank 0 only under torchrun)."""
    validate(cfg)
    cfg = cfg.resolved()
    started = time.perf_counter()
    d = init_distributed(cfg.device)
    device = select_device(cfg.device, d.local_rank)
    _set_determinism(cfg, device)
    output_dir = Path(cfg.output_dir)

    run_id = cfg.run_id
    if cfg.resume and run_id is None:
        run_id = _latest_resumable(output_dir) if d.main else None
        run_id = _broadcast(run_id, d)
        if run_id is None:
            raise WorkloadError(f"--resume: no {CHECKPOINT} under {output_dir}/*/")
    if run_id is None:
        run_id = _broadcast(new_run_id() if d.main else None, d)
    if not run_id or "/" in run_id or run_id.startswith("."):
        raise WorkloadError(f"--run-id {run_id!r} must be a plain directory name")
    run_dir = output_dir / run_id
    ckpt_path = run_dir / CHECKPOINT
    ckpt: dict[str, Any] | None = None
    if cfg.resume:
        if not ckpt_path.is_file():
            raise WorkloadError(f"--resume: {ckpt_path} does not exist")
        ckpt = _load_checkpoint(ckpt_path)
        saved = ckpt.get("config", {})
        for key in RESUME_KEYS:
            if key in saved and saved[key] != getattr(cfg, key):
                raise WorkloadError(
                    f"--resume: the checkpoint was made with {key}={saved[key]!r}, "
                    f"not {getattr(cfg, key)!r}; pass the same value"
                )

    data: CachedData = load_cached(cfg.data, cfg.image_size, cfg.limit, cfg.seed, cfg.workers)
    # The checkpoint overwrites every weight, so resuming never needs the network.
    model = build_model("none" if ckpt else cfg.weights, len(data.classes), cfg.mode)
    batcher = Batcher(cfg, device)
    model = model.to(device, memory_format=batcher.memory_format)
    amp = cfg.amp and device.type == "cuda"
    train_x, val_x = _pin(data.train_x, device), _pin(data.val_x, device)

    cached_features = cfg.mode == "feature-extract" and not cfg.augment
    if cached_features:
        train_f = extract_features(model, train_x, batcher, max(cfg.batch_size, 64), amp)
        val_f = extract_features(model, val_x, batcher, max(cfg.batch_size, 64), amp)
        trainable: nn.Module = model.fc
    else:
        trainable = model
    if d.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        trainable = nn.parallel.DistributedDataParallel(trainable, device_ids=ids)
    setup_s = time.perf_counter() - started

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, cfg.step_size, cfg.gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and not torch.cuda.is_bf16_supported())
    loss_fn = nn.CrossEntropyLoss()

    def forward(
        idx: torch.Tensor, train_mode: bool, generator: torch.Generator | None
    ) -> torch.Tensor:
        with _autocast(device, amp):
            if cached_features:
                feats = (train_f if train_mode else val_f)[idx.to(device)]
                return (trainable if train_mode else model.fc)(feats)
            images = (train_x if train_mode else val_x)[idx]
            x = batcher(images, augment=train_mode and bool(cfg.augment), generator=generator)
            return (trainable if train_mode else model)(x)

    history: list[dict[str, Any]] = []
    best = {"acc": -1.0, "epoch": 0, "state": None, "trues": [], "preds": []}
    start_epoch = 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        history = list(ckpt["history"])
        best = dict(ckpt["best"])
        start_epoch = int(ckpt["epoch"])

    n_train = len(data.train_y)
    per_rank = n_train // d.world
    log = print if d.main else (lambda *a, **k: None)
    log(
        f"run {run_id}: {cfg.mode}, {len(data.classes)} classes, {n_train} train / "
        f"{len(data.val_y)} val images at {cfg.image_size}px on {device}"
        + (f" x{d.world} ({dist.get_backend()})" if d.world > 1 else "")
        + (f", resuming after epoch {start_epoch}" if start_epoch else ""),
        flush=True,
    )
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        order = torch.randperm(n_train, generator=generator)[: per_rank * d.world][
            d.rank :: d.world
        ]
        if cached_features or cfg.mode == "feature-extract":
            model.eval()  # frozen backbone: its BatchNorm statistics stay as loaded
            if not cached_features:
                model.fc.train()
        else:
            model.train()
        bar = _progress(cfg, d, per_rank * d.world, f"epoch {epoch + 1}/{cfg.epochs}")
        # The sums stay on the device until the epoch ends: no host sync per step, so the CPU
        # prepares the next batch while the GPU is still busy with this one.
        loss_t = torch.zeros((), dtype=torch.float64, device=device)
        correct_t = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        for idx in _chunks(order, cfg.batch_size):
            y = data.train_y[idx].to(device, non_blocking=True)
            logits = forward(idx, True, generator)
            loss = loss_fn(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_t += loss.detach().double() * len(idx)
            correct_t += (logits.argmax(1) == y).sum()
            seen += len(idx)
            if bar is not None:
                bar.update(len(idx) * d.world)
        if bar is not None:
            bar.close()
        loss_sum, correct, seen = _all_sum(
            [loss_t.item(), float(correct_t.item()), float(seen)], d, device
        )
        train_s = time.perf_counter() - t0
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        model.eval()
        val_loss, val_acc, trues, preds = _evaluate(
            lambda idx: forward(idx, False, None),
            len(data.val_y),
            data.val_y,
            max(cfg.batch_size, 64),
            d,
            device,
        )
        if val_acc > best["acc"]:
            state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            best = {
                "acc": val_acc,
                "epoch": epoch + 1,
                "state": state,
                "trues": trues,
                "preds": preds,
            }
        row = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / seen,
            "train_acc": correct / seen,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": lr,
            "images_per_s": seen / train_s,
            "epoch_time_s": time.perf_counter() - t0,
        }
        history.append(row)
        log(
            f"epoch {epoch + 1}/{cfg.epochs} train loss {row['train_loss']:.4f} "
            f"acc {row['train_acc']:.3f} | val loss {val_loss:.4f} acc {val_acc:.3f} | "
            f"{row['images_per_s']:.1f} img/s {row['epoch_time_s']:.1f}s",
            flush=True,
        )
        if d.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            _atomic_save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "epoch": epoch + 1,
                    "history": history,
                    "best": best,
                    "config": {k: getattr(cfg, k) for k in RESUME_KEYS},
                },
                ckpt_path,
            )

    if best["state"] is not None:
        model.load_state_dict(best["state"])
    wall = time.perf_counter() - started
    metrics: dict[str, Any] = {
        "run_id": run_id,
        "mode": cfg.mode,
        "weights": cfg.weights,
        "device": str(device),
        "world_size": d.world,
        "dist_backend": dist.get_backend() if d.world > 1 else None,
        "image_size": cfg.image_size,
        "batch_size": cfg.batch_size,
        "classes": data.classes,
        "num_train": n_train,
        "num_val": len(data.val_y),
        "skipped_files": len(data.skipped),
        "cached_features": cached_features,
        "epochs": history,
        "best_val_acc": best["acc"],
        "best_epoch": best["epoch"],
        "images_per_s": _mean([r["images_per_s"] for r in history]),
        "setup_time_s": setup_s,
        "wall_time_s": wall,
    }
    if d.main:
        from transfer_learning.report import write_outputs

        write_outputs(run_dir, cfg_dict(cfg), metrics, model, best["trues"], best["preds"])
        log(f"best val acc {best['acc']:.3f} (epoch {best['epoch']}); outputs in {run_dir}")
    if d.world > 1:
        dist.barrier()
    return RunResult(run_id, run_dir, metrics, data.classes, model)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def cfg_dict(cfg: TrainConfig) -> dict[str, Any]:
    return asdict(cfg)


def load_model_file(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Read a model.pt written by `train` back into a resnet18."""
    p = Path(path)
    if not p.is_file():
        raise WorkloadError(f"model file {p} does not exist: pass --model OUT/<run-id>/model.pt")
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
        model = build_model("none", len(blob["classes"]), "finetune")
        model.load_state_dict(blob["state_dict"])
    except WorkloadError:
        raise
    except Exception as exc:  # a corrupt or foreign file
        raise WorkloadError(f"cannot read model file {p} ({exc.__class__.__name__})") from None
    return model, blob


def evaluate(
    model_path: str,
    data_dir: str,
    split: str = "val",
    batch_size: int = 64,
    workers: int = 2,
    device_name: str = "auto",
    limit: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy of a saved model on one split (the same sample as `train` with the same seed)."""
    model, blob = load_model_file(model_path)
    device = select_device(device_name)
    image_size = int(blob["image_size"])
    data = load_cached(data_dir, image_size, limit, seed, workers)
    if data.classes != list(blob["classes"]):
        raise WorkloadError(
            f"{data_dir} has classes {data.classes}, the model was trained on {list(blob['classes'])}"
        )
    x, y = (data.val_x, data.val_y) if split == "val" else (data.train_x, data.train_y)
    cfg = TrainConfig(data=data_dir, image_size=image_size)
    batcher = Batcher(cfg, device)
    model = model.to(device, memory_format=batcher.memory_format).eval()
    amp = device.type == "cuda"

    def forward(idx: torch.Tensor) -> torch.Tensor:
        with _autocast(device, amp):
            return model(batcher(x[idx], augment=False))

    loss, acc, trues, preds = _evaluate(forward, len(y), y, batch_size, Dist(), device)
    per_class = {}
    for k, name in enumerate(data.classes):
        hits = [p == t for p, t in zip(preds, trues, strict=True) if t == k]
        per_class[name] = sum(hits) / len(hits) if hits else None
    return {"split": split, "images": len(y), "loss": loss, "accuracy": acc, "per_class": per_class}


__all__ = ["RunResult", "TrainConfig", "cache_size", "evaluate", "train"]
