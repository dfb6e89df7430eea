"""Run outputs: metrics.json, history.csv, curves.png, confusion.png, model.pt, environment.json."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transfer_learning.data import IMAGENET_MEAN, IMAGENET_STD, Batcher, load_cached

# The notebook image passes these in; outside it they are worked out from the checkout.
ENV_IMAGE_ID = "WORKBENCH_IMAGE_ID"
ENV_GIT_REVISION = "WORKBENCH_GIT_REVISION"
ENV_LOCK_SHA256 = "WORKBENCH_LOCK_SHA256"
WORKLOAD_DIR = Path(__file__).resolve().parent.parent


def _git_revision() -> str | None:
    if os.environ.get(ENV_GIT_REVISION):
        return os.environ[ENV_GIT_REVISION]
    if not shutil.which("git"):
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(WORKLOAD_DIR), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _lock_sha256() -> str | None:
    if os.environ.get(ENV_LOCK_SHA256):
        return os.environ[ENV_LOCK_SHA256]
    lock = WORKLOAD_DIR / "requirements.lock"
    return hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_driver() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (
        out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    )


def environment(arguments: dict[str, Any]) -> dict[str, Any]:
    """The reproducibility record of a run."""
    import torchvision

    cuda = torch.cuda.is_available()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda
        else [],
        "nvidia_driver": _nvidia_driver() if cuda else None,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "seed": arguments.get("seed"),
        "arguments": arguments,
        "git_revision": _git_revision(),
        "lock_sha256": _lock_sha256(),
        "image_id": os.environ.get(ENV_IMAGE_ID) or None,
    }


def _plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in history]
    # Figure, not pyplot: no global backend switch inside a notebook.
    fig = Figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "o-", label="val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_acc.plot(epochs, [r["train_acc"] for r in history], "o-", label="train")
    ax_acc.plot(epochs, [r["val_acc"] for r in history], "o-", label="val")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _plot_confusion(trues: list[int], preds: list[int], classes: list[str], path: Path) -> None:
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

    matrix = confusion_matrix(trues, preds, labels=list(range(len(classes))))
    size = max(4, 0.6 * len(classes) + 2)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    ConfusionMatrixDisplay(matrix, display_labels=classes).plot(ax=ax, colorbar=False)
    ax.set_title("Validation confusion matrix (best epoch)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_outputs(
    run_dir: Path,
    arguments: dict[str, Any],
    metrics: dict[str, Any],
    model: nn.Module,
    trues: list[int],
    preds: list[int],
    distributed: dict[str, Any] | None = None,
) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    history = metrics["epochs"]
    with (run_dir / "history.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]) if history else ["epoch"])
        writer.writeheader()
        writer.writerows(history)
    _plot_curves(history, run_dir / "curves.png")
    _plot_confusion(trues, preds, metrics["classes"], run_dir / "confusion.png")
    torch.save(
        {
            "arch": "resnet18",
            "classes": metrics["classes"],
            "image_size": metrics["image_size"],
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        },
        run_dir / "model.pt",
    )
    env = environment(arguments)
    env["data_store"] = metrics.get("data_store")  # which path the decoded images took, and why
    if distributed is not None:  # nodes, ranks, world size, backend, each rank's share of data
        env["distributed"] = distributed
    (run_dir / "environment.json").write_text(json.dumps(env, indent=2) + "\n")


def plot_predictions(
    model: nn.Module,
    data_dir: str | os.PathLike[str],
    classes: list[str],
    image_size: int,
    count: int = 16,
    path: Path | None = None,
    seed: int = 0,
) -> Any:
    """A grid of validation images titled `prediction (truth)`, wrong ones in red."""
    import matplotlib.pyplot as plt

    data = load_cached(data_dir, image_size, count, seed, 0)
    device = next(model.parameters()).device
    batcher = Batcher(image_size, device)
    model.eval()
    with torch.inference_mode():
        preds = model(batcher(data.val_x, augment=False)).argmax(1).tolist()
    cols = min(4, len(preds))
    rows = (len(preds) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.5 * cols, 2.7 * rows), squeeze=False)
    side = data.val_x.shape[-1]
    o = (side - image_size) // 2
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, pred, true in zip(axes.flat, data.val_x, preds, data.val_y.tolist(), strict=False):
        ax.imshow(img[:, o : o + image_size, o : o + image_size].permute(1, 2, 0).numpy())
        ax.set_title(f"{classes[pred]} ({classes[true]})", color="black" if pred == true else "red")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
