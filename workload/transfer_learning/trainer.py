"""Training and evaluation: one device chosen once, cached data, exact resume, DDP.

`train(cfg)` is the entry point of the CLI and the notebook: a `Trainer` resumes, runs its
epochs (train, evaluate, checkpoint) and `report.write_outputs` writes the run's files.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transfer_learning import memory
from transfer_learning.config import RESUME_KEYS, TrainConfig, cfg_dict, new_run_id, validate
from transfer_learning.data import (
    Batcher,
    CachedData,
    FolderData,
    Images,
    load_cached,
    plan_store,
    scan_folder,
)
from transfer_learning.distributed import Dist, process_group, select_device
from transfer_learning.errors import Interrupted, WorkloadError
from transfer_learning.model import backbone_features, build_model, load_model_file
from transfer_learning.precision import mixed_precision
from transfer_learning.progress import Progress, final_state
from transfer_learning.report import write_outputs

CHECKPOINT = "checkpoint.pt"


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    metrics: dict[str, Any]
    classes: list[str]
    model: nn.Module | None = field(default=None, repr=False)


def _latest_resumable(output_dir: Path) -> str | None:
    """The run whose checkpoint was written last (run ids need not sort by time)."""
    runs = sorted((p.stat().st_mtime_ns, p.parent.name) for p in output_dir.glob(f"*/{CHECKPOINT}"))
    return runs[-1][1] if runs else None


def _prepare_run_dir(run_dir: Path) -> None:
    """Create the run directory now, so a bad --output-dir fails before any work."""
    for parent in (run_dir.parent, *run_dir.parent.parents):
        if parent.exists() and not parent.is_dir():
            raise WorkloadError(
                f"--output-dir {run_dir.parent} cannot be used: {parent} is a file, not a directory"
            )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WorkloadError(
            f"--output-dir {run_dir.parent} cannot be used: {exc.strerror or exc}"
        ) from None


def check_resume_data(ckpt: dict[str, Any], folder: FolderData) -> None:
    """The checkpoint's classes and data root against this run's: one line when they differ."""
    classes = ckpt.get("classes")
    if classes is not None and list(classes) != folder.classes:
        raise WorkloadError(
            f"--resume: the checkpoint was trained on classes {list(classes)}, but "
            f"{folder.root}/train has {folder.classes}; pass the --data it was trained on"
        )
    root = ckpt.get("data_root")
    if root is not None and root != str(folder.root.resolve()):
        raise WorkloadError(
            f"--resume: the checkpoint was trained on --data {root}, not {folder.root.resolve()}; "
            "pass the same data root"
        )


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


def _autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _chunks(indices: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    for start in range(0, len(indices), size):
        yield indices[start : start + size]


def train_batches(indices: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Batches of `size`; a last batch of one image joins the one before it.

    BatchNorm in training mode needs more than one value per channel; at small image sizes
    resnet18's last stage is 1x1, so a batch of one image would stop the run.
    """
    batches = list(_chunks(indices, size))
    if size > 1 and len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


@contextlib.contextmanager
def _batchnorm_running_stats(model: nn.Module, batch: int) -> Iterator[None]:
    """A batch of one image (--batch-size 1, or one image per rank) uses BatchNorm's running
    statistics: it has no batch statistics to normalise with."""
    norms = [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
    ]
    if batch > 1 or not norms:
        yield
        return
    for m in norms:
        m.eval()
    try:
        yield
    finally:
        for m in norms:
            m.train()


def _pin(t: Images, device: torch.device) -> Images:
    return t.pin_memory() if device.type == "cuda" and isinstance(t, torch.Tensor) else t


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


@torch.inference_mode()
def extract_features(
    model: nn.Module,
    images: Images,
    batcher: Batcher,
    batch_size: int,
    amp: torch.dtype | None,
) -> torch.Tensor:
    """Frozen-backbone features of centre-cropped images, computed once."""
    model.eval()
    out = []
    for idx in _chunks(torch.arange(len(images)), batch_size):
        with _autocast(batcher.device, amp):
            out.append(backbone_features(model, batcher(images[idx], augment=False)).float())
    return torch.cat(out) if out else torch.empty(0, 512, device=batcher.device)


@torch.inference_mode()
def evaluate_split(
    forward: Callable[[torch.Tensor], torch.Tensor],
    targets: torch.Tensor,
    batch_size: int,
    d: Dist,
    device: torch.device,
) -> tuple[float, float, list[int], list[int]]:
    """Loss, accuracy and (targets, predictions) over the whole split, sharded by rank."""
    order = torch.arange(len(targets))[d.rank :: d.world]
    loss_sum, preds, trues = 0.0, [], []
    for idx in _chunks(order, batch_size):
        logits = forward(idx).float()
        y = targets[idx].to(device, non_blocking=True)
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        preds += logits.argmax(1).tolist()
        trues += targets[idx].tolist()
    (loss_sum,) = d.all_sum([loss_sum], device)
    preds, trues = d.gather(preds), d.gather(trues)
    acc = sum(p == t for p, t in zip(preds, trues, strict=True)) / max(1, len(trues))
    return loss_sum / max(1, len(trues)), acc, trues, preds


def load_checkpoint(path: Path) -> dict[str, Any]:
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


def resolve_run(cfg: TrainConfig, d: Dist) -> tuple[str, dict[str, Any] | None]:
    """The run id (new, given, or the newest resumable one) and its checkpoint when resuming."""
    output_dir = Path(cfg.output_dir)
    run_id = cfg.run_id
    if cfg.resume and run_id is None:
        run_id = d.broadcast(_latest_resumable(output_dir) if d.main else None)
        if run_id is None:
            raise WorkloadError(f"--resume: no {CHECKPOINT} under {output_dir}/*/")
    if run_id is None:
        run_id = d.broadcast(new_run_id() if d.main else None)
    if not run_id or "/" in run_id or run_id.startswith("."):
        raise WorkloadError(f"--run-id {run_id!r} must be a plain directory name")
    if d.main:
        _prepare_run_dir(output_dir / run_id)
    if not cfg.resume:
        return run_id, None
    ckpt_path = output_dir / run_id / CHECKPOINT
    if not ckpt_path.is_file():
        raise WorkloadError(f"--resume: {ckpt_path} does not exist")
    ckpt = load_checkpoint(ckpt_path)
    if int(ckpt.get("world_size", d.world)) != d.world:
        raise WorkloadError(
            f"--resume: the checkpoint was made by {ckpt['world_size']} process(es), not "
            f"{d.world}; resume with the same torchrun --nproc-per-node"
        )
    saved = ckpt.get("config", {})
    for key in RESUME_KEYS:
        if key in saved and saved[key] != getattr(cfg, key):
            raise WorkloadError(
                f"--resume: the checkpoint was made with {key}={saved[key]!r}, "
                f"not {getattr(cfg, key)!r}; pass the same value"
            )
    return run_id, ckpt


class StopSignals:
    """SIGTERM and SIGINT: checkpoint at the next step and stop; SIGUSR1: checkpoint and go on.

    The handlers only set flags; the training loop acts on them between two optimizer steps,
    where the model, optimizer and random generator are consistent. A second SIGINT stops at
    once (KeyboardInterrupt), for a step that never ends.
    """

    SAVE = signal.SIGUSR1
    STOP = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.stop = 0
        self.save = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        self._depth = getattr(self, "_depth", 0) + 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread():
            for sig in (*self.STOP, self.SAVE):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        if signum == self.SAVE:
            self.save = True
            return
        if self.stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop = signum


class Trainer:
    """One run's state: data, model, optimizer and schedule, history and best epoch.

    `fit()` resumes from the checkpoint when given one, then for each remaining epoch runs
    `train_epoch`, `evaluate` and `save_checkpoint`, and returns the run's metrics.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        d: Dist,
        device: torch.device,
        run_id: str,
        data: CachedData,
        ckpt: dict[str, Any] | None,
        started: float,
        signals: StopSignals | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.progress = progress
        self.cfg, self.d, self.device, self.run_id, self.data = cfg, d, device, run_id, data
        self.started = started
        self.run_dir = Path(cfg.output_dir) / run_id
        self.ckpt_path = self.run_dir / CHECKPOINT
        # The checkpoint overwrites every weight, so resuming never needs the network.
        model = build_model("none" if ckpt else cfg.weights, len(data.classes), cfg.mode)
        self.batcher = Batcher(cfg.image_size, device, cfg.channels_last, cfg.amp)
        self.model = model.to(device, memory_format=self.batcher.memory_format)
        self.amp = mixed_precision(device, cfg.amp)
        self.train_x, self.val_x = _pin(data.train_x, device), _pin(data.val_x, device)
        self.cached_features = cfg.mode == "feature-extract" and not cfg.augment
        self.trainable: nn.Module = self.model
        if self.cached_features:
            eval_batch = max(cfg.batch_size, 64)
            self.train_f = extract_features(
                self.model, self.train_x, self.batcher, eval_batch, self.amp
            )
            self.val_f = extract_features(
                self.model, self.val_x, self.batcher, eval_batch, self.amp
            )
            self.trainable = self.model.fc
        if d.world > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.trainable = nn.parallel.DistributedDataParallel(self.trainable, device_ids=ids)
        self.setup_s = time.perf_counter() - started

        params = [p for p in self.model.parameters() if p.requires_grad]
        # Linear scaling rule (Goyal et al., 2017): DDP averages the gradient over
        # world x batch-size images, so each step stands for `world` single-process steps and
        # takes `world` times the per-process rate. --lr and its default are per process.
        self.lr = float(cfg.lr or 0) * d.world
        self.optimizer = torch.optim.SGD(params, lr=self.lr, momentum=cfg.momentum)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, cfg.step_size, cfg.gamma)
        # Loss scaling for float16 only: bf16 has float32's range.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.loss_fn = nn.CrossEntropyLoss()
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {
            "acc": -1.0,
            "epoch": 0,
            "state": None,
            "trues": [],
            "preds": [],
        }
        self.start_epoch = 0
        # The training images of the first epoch this process ran (environment.json).
        self.first_share: list[int] | None = None
        # Where a mid-epoch checkpoint left off: (epoch, step, generator state, partial sums).
        self.pending: dict[str, Any] | None = None
        self.signals = signals or StopSignals()
        if ckpt is not None:
            self.resume(ckpt)

    # -- steps ---------------------------------------------------------------------------

    def resume(self, ckpt: dict[str, Any]) -> None:
        """Load the weights, optimizer, schedule, history and best epoch of a checkpoint."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self._reschedule()
        self.scaler.load_state_dict(ckpt["scaler"])
        self.history = list(ckpt["history"])
        self.best = dict(ckpt["best"])
        self.start_epoch = int(ckpt["epoch"])
        if ckpt.get("step"):
            self.pending = {
                "epoch": self.start_epoch,
                "step": int(ckpt["step"]),
                "generator": ckpt["generator"],
                "partial": list(ckpt["partial"]),
            }

    def _reschedule(self) -> None:
        """Apply this run's --step-size and --gamma to a loaded schedule.

        StepLR's state carries the values it was made with; without this, a resumed run keeps
        them silently. The rate of the next epoch is the one an uninterrupted run with these
        values would use: lr x gamma ^ (epochs done // step size).
        """
        sched: Any = self.scheduler
        old = (sched.step_size, sched.gamma)
        if old == (self.cfg.step_size, self.cfg.gamma):
            return  # the loaded rates are already exact
        sched.step_size, sched.gamma = self.cfg.step_size, self.cfg.gamma
        self.log(
            f"resume: --step-size {sched.step_size} --gamma {sched.gamma} replace the "
            f"checkpoint's {old[0]} and {old[1]}"
        )
        for group, base in zip(self.optimizer.param_groups, sched.base_lrs, strict=True):
            lr = base
            for _ in range(sched.last_epoch // sched.step_size):
                lr *= sched.gamma  # as StepLR multiplies, step by step
            group["lr"] = lr
        sched._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def forward(
        self, idx: torch.Tensor, train_mode: bool, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        with _autocast(self.device, self.amp):
            if self.cached_features:
                feats = (self.train_f if train_mode else self.val_f)[idx.to(self.device)]
                return (self.trainable if train_mode else self.model.fc)(feats)
            images = (self.train_x if train_mode else self.val_x)[idx]
            augment = train_mode and bool(self.cfg.augment)
            x = self.batcher(images, augment=augment, generator=generator)
            return (self.trainable if train_mode else self.model)(x)

    def _train_mode(self) -> None:
        if self.cfg.mode == "feature-extract":
            self.model.eval()  # frozen backbone: its BatchNorm statistics stay as loaded
            if not self.cached_features:
                self.model.fc.train()
        else:
            self.model.train()

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over this rank's share of the epoch's seeded permutation.

        After each step, a signal (see `StopSignals`) saves a checkpoint of the step; the
        epoch's generator state and partial sums make its continuation exact.
        """
        cfg, d = self.cfg, self.d
        t0 = time.perf_counter()
        n_train = len(self.data.train_y)
        per_rank = n_train // d.world
        generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        order = torch.randperm(n_train, generator=generator)[: per_rank * d.world][
            d.rank :: d.world
        ]
        if self.first_share is None:  # what this rank trains on, recorded once
            self.first_share = order.tolist()
        batches = train_batches(order, cfg.batch_size)
        start, sums = 0, [0.0, 0.0, 0.0]  # loss x images, correct, images
        if self.pending is not None and self.pending["epoch"] == epoch:
            start = self.pending["step"]
            generator.set_state(self.pending["generator"])
            if d.main:  # the sums were added over the ranks when saved
                sums = [float(v) for v in self.pending["partial"]]
            self.pending = None
        self._train_mode()
        bar = self._progress(per_rank * d.world, f"epoch {epoch + 1}/{cfg.epochs}")
        if self.progress is not None:
            self.progress.epoch_started(epoch + 1, len(batches), start)
        seen_here = 0
        # The sums stay on the device until the epoch ends (or a signal asks for them): no
        # host sync per step, so the CPU prepares the next batch while the GPU still works.
        sums_t = torch.tensor(sums, dtype=torch.float64, device=self.device)
        for step in range(start, len(batches)):
            idx = batches[step]
            y = self.data.train_y[idx].to(self.device, non_blocking=True)
            with _batchnorm_running_stats(self.model, len(idx)):
                logits = self.forward(idx, True, generator)
            loss = self.loss_fn(logits.float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            sums_t[0] += loss.detach().double() * len(idx)
            sums_t[1] += (logits.argmax(1) == y).sum()
            sums_t[2] += len(idx)
            seen_here += len(idx)
            if bar is not None:
                bar.update(len(idx) * d.world)
            if self.progress is not None:
                self.progress.step_done(step + 1, seen_here * d.world)
            self._on_signal(epoch, step + 1, len(batches), generator, sums_t)
        if bar is not None:
            bar.close()
        loss_sum, correct, seen = d.all_sum(sums_t.tolist(), self.device)
        train_s = time.perf_counter() - t0
        return {
            "train_loss": loss_sum / seen,
            "train_acc": correct / seen,
            "images_per_s": seen_here * d.world / train_s,
            "t0": t0,
        }

    def _on_signal(
        self,
        epoch: int,
        step: int = 0,
        steps: int = 0,
        generator: torch.Generator | None = None,
        sums: torch.Tensor | None = None,
    ) -> None:
        """Act on SIGUSR1 (checkpoint) or SIGTERM/SIGINT (checkpoint, then stop), all ranks
        together: under torchrun the signal reaches the ranks at different steps.

        Mid-epoch (`generator` and `sums` given) the step is saved; at the end of an epoch
        (a signal during evaluation) the epoch's checkpoint was just written."""
        stop, save = self.signals.stop, self.signals.save
        if self.d.world > 1:
            flags = torch.tensor([stop, int(save)], dtype=torch.int64, device=self.device)
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
            stop, save = int(flags[0]), bool(flags[1])
        if not (stop or save):
            return
        self.signals.save = False
        if generator is not None and sums is not None:
            partial = self.d.all_sum(sums.tolist(), self.device)
            extra = {"step": step, "generator": generator.get_state(), "partial": partial}
            self.save_checkpoint(epoch, extra)
            where = f"in epoch {epoch + 1} after step {step} of {steps}"
        else:
            where = f"after epoch {epoch}"
        if not stop:
            self.log(f"checkpoint saved {where} (SIGUSR1): {self.ckpt_path}")
            return
        name = signal.Signals(stop).name
        raise Interrupted(
            f"stopped by {name} {where}: checkpoint saved to {self.ckpt_path}; continue "
            f"with --resume --run-id {self.run_id} (and the same options)",
            stop,
        )

    def evaluate(self) -> tuple[float, float, list[int], list[int]]:
        self.model.eval()
        return evaluate_split(
            lambda idx: self.forward(idx, False),
            self.data.val_y,
            max(self.cfg.batch_size, 64),
            self.d,
            self.device,
        )

    def save_checkpoint(self, epoch: int, extra: dict[str, Any] | None = None) -> None:
        """Everything `resume` needs, written atomically (rank 0): `epoch` epochs done, and
        in `extra` the step, generator state and partial sums of a checkpoint mid-epoch."""
        if not self.d.main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _atomic_save(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "epoch": epoch,
                "history": self.history,
                "best": self.best,
                "config": {k: getattr(self.cfg, k) for k in RESUME_KEYS},
                "classes": self.data.classes,
                "data_root": str(Path(self.cfg.data).resolve()),
                "world_size": self.d.world,
                **(extra or {}),
            },
            self.ckpt_path,
        )

    # -- the loop ------------------------------------------------------------------------

    def log(self, message: str) -> None:
        if self.d.main:
            print(message, flush=True)

    def _progress(self, total: int, desc: str) -> Any:
        show = self.cfg.progress if self.cfg.progress is not None else sys.stderr.isatty()
        if not (show and self.d.main):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="img", leave=False)

    def fit(self) -> dict[str, Any]:
        cfg, d, data = self.cfg, self.d, self.data
        n_train = len(data.train_y)
        self.log(
            f"run {self.run_id}: {cfg.mode}, {len(data.classes)} classes, {n_train} train / "
            f"{len(data.val_y)} val images at {cfg.image_size}px on {self.device}"
            + (f" x{d.world} ({d.backend})" if d.world > 1 else "")
            + (
                f", resuming in epoch {self.start_epoch + 1} after step {self.pending['step']}"
                if self.pending
                else f", resuming after epoch {self.start_epoch}"
                if self.start_epoch
                else ""
            )
        )
        if self.signals.stop:  # a signal while the data was loading: nothing trained yet
            name = signal.Signals(self.signals.stop).name
            raise Interrupted(f"stopped by {name} before training started", self.signals.stop)
        with self.signals:
            self._epochs()
        return self.metrics()

    def _epochs(self) -> None:
        cfg = self.cfg
        for epoch in range(self.start_epoch, cfg.epochs):
            stats = self.train_epoch(epoch)
            lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            val_loss, val_acc, trues, preds = self.evaluate()
            if val_acc > self.best["acc"]:
                state = {
                    k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()
                }
                self.best = {
                    "acc": val_acc,
                    "epoch": epoch + 1,
                    "state": state,
                    "trues": trues,
                    "preds": preds,
                }
            row = {
                "epoch": epoch + 1,
                "train_loss": stats["train_loss"],
                "train_acc": stats["train_acc"],
                "val_loss": val_loss,
                "val_acc": val_acc,
                "lr": lr,
                "images_per_s": stats["images_per_s"],
                "epoch_time_s": time.perf_counter() - stats["t0"],
            }
            self.history.append(row)
            if self.progress is not None:
                self.progress.epoch_done(row)
            self.log(
                f"epoch {epoch + 1}/{cfg.epochs} train loss {row['train_loss']:.4f} "
                f"acc {row['train_acc']:.3f} | val loss {val_loss:.4f} acc {val_acc:.3f} | "
                f"{row['images_per_s']:.1f} img/s {row['epoch_time_s']:.1f}s"
            )
            self.save_checkpoint(epoch + 1)
            if epoch + 1 < cfg.epochs:  # a signal during evaluation: the epoch is saved
                self._on_signal(epoch + 1)

    def metrics(self) -> dict[str, Any]:
        """The run's record; the model is left with the best epoch's weights."""
        cfg, d, data = self.cfg, self.d, self.data
        if self.best["state"] is not None:
            self.model.load_state_dict(self.best["state"])
        return {
            "run_id": self.run_id,
            "mode": cfg.mode,
            "weights": cfg.weights,
            "device": str(self.device),
            "world_size": d.world,
            "dist_backend": d.backend,
            # The autocast dtype (mixed_precision: per device, --no-amp turns it off).
            "precision": str(self.amp or torch.float32).removeprefix("torch."),
            "image_size": cfg.image_size,
            "batch_size": cfg.batch_size,
            "lr": self.lr,
            "lr_rule": f"--lr {cfg.lr} per process x world size {d.world} (linear scaling)",
            "classes": data.classes,
            "num_train": len(data.train_y),
            "num_val": len(data.val_y),
            "skipped_files": len(data.skipped),
            "cached_features": self.cached_features,
            "epochs": self.history,
            "best_val_acc": self.best["acc"],
            "best_epoch": self.best["epoch"],
            "images_per_s": _mean([r["images_per_s"] for r in self.history]),
            "setup_time_s": self.setup_s,
            "wall_time_s": time.perf_counter() - self.started,
            "data_store": data.plan.record() if data.plan else None,
            "peak_rss_bytes": memory.peak_rss(),
        }


def distributed_record(d: Dist, device: torch.device, share: list[int] | None) -> dict[str, Any]:
    """Where the run ran (environment.json's `distributed`): nodes, ranks (node, host,
    device), world size, backend, and each rank's share of the first epoch's training
    images (count and SHA-256); `overlap` counts the images more than one rank trained on
    (0: the shares are disjoint). A collective: every rank calls it."""
    share = share or []
    mine = {
        "rank": d.rank,
        "local_rank": d.local_rank,
        "node_rank": d.node_rank,
        "hostname": socket.gethostname(),
        "device": str(device),
        "train_images": len(share),
        "train_indices_sha256": hashlib.sha256(
            ",".join(map(str, sorted(share))).encode()
        ).hexdigest(),
    }
    parts = d.gather_objects((mine, share))
    seen: set[int] = set()
    overlap = 0
    for _, indices in parts:
        overlap += len(seen.intersection(indices))
        seen.update(indices)
    return {
        "world_size": d.world,
        "nodes": d.nodes,
        "backend": d.backend,
        "ranks": [record for record, _ in parts],
        "first_epoch": {"images": len(seen), "overlap": overlap},
    }


def load_data(cfg: TrainConfig, d: Dist, folder: FolderData) -> CachedData:
    """Decode once, in memory or on disk as rank 0 plans; rank 0 builds a disk cache first."""
    plan = d.broadcast(
        plan_store(folder, cfg.image_size, cfg.limit, cfg.seed, cfg.data_store, cfg.cache_dir)
        if d.main
        else None
    )
    if d.main:
        print(f"data: {plan.kind} ({plan.reason})", flush=True)

    def load() -> CachedData:
        args = (cfg.data, cfg.image_size, cfg.limit, cfg.seed, cfg.workers, folder, plan)
        return load_cached(*args)

    if plan.kind == "memory" or d.world == 1:
        return load()
    data = load() if d.main else None
    d.barrier()
    return data or load()


@contextlib.contextmanager
def _reporting(progress: Progress | None) -> Iterator[None]:
    """Heartbeat while the body runs; the final state (done, stopped, failed) as it ends."""
    if progress is None:
        yield
        return
    progress.start()
    try:
        yield
    except BaseException as exc:
        progress.finish(final_state(exc))
        raise
    progress.finish("done")


def train(cfg: TrainConfig) -> RunResult:
    """Run one training job and write its outputs (rank 0 only under torchrun)."""
    validate(cfg)
    cfg = cfg.resolved()
    started = time.perf_counter()
    with process_group(cfg.device) as d, StopSignals() as signals:
        device = select_device(cfg.device, d.local_rank)
        _set_determinism(cfg, device)
        run_id, ckpt = resolve_run(cfg, d)
        # Each node's first process (rank 0 on node 0) tells watchers how far the run is
        # (progress.json in that node's run folder), from now until it ends: the run role
        # follows node 0's; the idle agent of every node sees the run as activity there.
        progress = (
            Progress(Path(cfg.output_dir) / run_id, run_id, cfg.epochs)
            if d.local_rank == 0
            else None
        )
        with _reporting(progress):
            folder = scan_folder(cfg.data)
            if ckpt is not None:
                check_resume_data(ckpt, folder)
            data = load_data(cfg, d, folder)
            trainer = Trainer(cfg, d, device, run_id, data, ckpt, started, signals, progress)
            metrics = trainer.fit()
            placement = distributed_record(d, device, trainer.first_share)
            if d.main:
                best = trainer.best
                write_outputs(
                    trainer.run_dir,
                    cfg_dict(cfg),
                    metrics,
                    trainer.model,
                    best["trues"],
                    best["preds"],
                    placement,
                )
                trainer.log(
                    f"best val acc {best['acc']:.3f} (epoch {best['epoch']}); "
                    f"outputs in {trainer.run_dir}"
                )
        d.barrier()
    return RunResult(run_id, trainer.run_dir, metrics, data.classes, trainer.model)


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
    folder = scan_folder(data_dir)
    plan = plan_store(folder, image_size, limit, seed)
    data = load_cached(data_dir, image_size, limit, seed, workers, folder, plan)
    if data.classes != list(blob["classes"]):
        raise WorkloadError(
            f"{data_dir} has classes {data.classes}, the model was trained on {list(blob['classes'])}"
        )
    x, y = (data.val_x, data.val_y) if split == "val" else (data.train_x, data.train_y)
    batcher = Batcher(image_size, device)
    model = model.to(device, memory_format=batcher.memory_format).eval()
    amp = mixed_precision(device)

    def forward(idx: torch.Tensor) -> torch.Tensor:
        with _autocast(device, amp):
            return model(batcher(x[idx], augment=False))

    loss, acc, trues, preds = evaluate_split(forward, y, batch_size, Dist(), device)
    per_class = {}
    for k, name in enumerate(data.classes):
        hits = [p == t for p, t in zip(preds, trues, strict=True) if t == k]
        per_class[name] = sum(hits) / len(hits) if hits else None
    return {"split": split, "images": len(y), "loss": loss, "accuracy": acc, "per_class": per_class}


__all__ = ["RunResult", "TrainConfig", "Trainer", "evaluate", "train"]
