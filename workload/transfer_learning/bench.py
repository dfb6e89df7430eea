"""The tutorial's recipe against ours, same machine, same data, repeated.

The headline is end-to-end wall time for the same epochs (ours' one-off decoding and feature
caching included); steady-state training throughput is reported apart and labelled as such:
in feature-extract mode ours then trains only `fc` on cached features. Each recipe runs
`repeats` times; the report gives the median and the spread (min, max).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import datasets, transforms
from torchvision.models import ResNet18_Weights

from transfer_learning.config import TrainConfig
from transfer_learning.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    cache_size,
    limit_split,
    make_digits,
    scan_folder,
)
from transfer_learning.distributed import select_device
from transfer_learning.errors import WorkloadError
from transfer_learning.model import build_model
from transfer_learning.precision import mixed_precision
from transfer_learning.trainer import train

STAND_IN = "self-pretrained stand-in for ImageNet"


def imagenet_cached() -> bool:
    """Whether torchvision's ImageNet resnet18 file is already in the hub cache (no download)."""
    name = os.path.basename(urllib.parse.urlparse(ResNet18_Weights.IMAGENET1K_V1.url).path)
    return (Path(torch.hub.get_dir()) / "checkpoints" / name).is_file()


def stand_in_folder(data_dir: Path, limit: int | None, seed: int, root: Path) -> Path:
    """An ImageFolder tree (symlinks) of the images outside the bench's train and val samples."""
    folder = scan_folder(data_dir)
    used = {
        "train": set(limit_split(folder.train, limit, seed).paths),
        "val": set(limit_split(folder.val, limit, seed + 1).paths),
    }
    counts = {}
    for split, part in (("train", folder.train), ("val", folder.val)):
        n = 0
        for i, (path, target) in enumerate(zip(part.paths, part.targets, strict=True)):
            if path in used[split]:
                continue
            dst = root / split / folder.classes[target] / f"{i:06d}-{path.name}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(path.resolve(), dst)
            n += 1
        counts[split] = n
    missing = [c for c in folder.classes if not (root / "train" / c).is_dir()]
    if missing or counts["val"] == 0:
        raise WorkloadError(
            f"--weights stand-in pretrains on images outside the bench's sample, but {data_dir} "
            f"has {counts['train']} such train images ({len(missing)} classes without any) and "
            f"{counts['val']} such val images: pass a smaller --limit, or --weights PATH/none"
        )
    return root


def _train_quietly(**settings: Any) -> tuple[Path, dict[str, Any]]:
    """`train` with our recipe, its progress lines sent to stderr (stdout is the report)."""
    with contextlib.redirect_stdout(sys.stderr):
        result = train(TrainConfig(progress=False, **settings))
    return result.run_dir, result.metrics


def make_stand_in(
    data_dir: Path,
    limit: int | None,
    seed: int,
    image_size: int,
    epochs: int,
    batch_size: int,
    workers: int,
    device_name: str,
    work: Path,
) -> tuple[Path, dict[str, Any]]:
    """Pretrain resnet18 from scratch on the images the bench does not use; return its model.pt.

    Offline there are no ImageNet weights, and comparing two recipes that both train a random
    resnet18 for a few epochs says nothing about accuracy. So the bench first fine-tunes a
    random resnet18 (seeded, our recipe) on the rest of the data set: train images outside the
    bench's train sample, validated on val images outside the bench's val sample. Both recipes
    then start from this same file, as they would from ImageNet weights.
    """
    root = stand_in_folder(data_dir, limit, seed, work / "stand-in-data")
    run_dir, m = _train_quietly(
        data=str(root),
        output_dir=str(work / "stand-in-out"),
        run_id="stand-in",
        weights="none",
        mode="finetune",
        epochs=epochs,
        image_size=image_size,
        batch_size=batch_size,
        workers=workers,
        device=device_name,
        seed=seed,
    )
    info = {
        "train_images": m["num_train"],
        "val_images": m["num_val"],
        "epochs": epochs,
        "val_acc": m["best_val_acc"],
        "wall_time_s": m["wall_time_s"],
    }
    return run_dir / "model.pt", info


def tutorial_run(
    data_dir: Path,
    mode: str,
    epochs: int,
    image_size: int,
    limit: int | None,
    seed: int,
    device: torch.device,
    weights: str,
    workers: int = 4,
) -> dict[str, Any]:
    """The classic tutorial loop: batch 4, 4 workers, fp32, contiguous, full forward each epoch."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    tf = {
        "train": transforms.Compose(
            [
                transforms.RandomResizedCrop(image_size),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                normalize,
            ]
        ),
        "val": transforms.Compose(
            [
                transforms.Resize(cache_size(image_size)),
                transforms.CenterCrop(image_size),
                transforms.ToTensor(),
                normalize,
            ]
        ),
    }
    folder = scan_folder(data_dir)
    chosen = {
        "train": limit_split(folder.train, limit, seed),
        "val": limit_split(folder.val, limit, seed + 1),
    }
    loaders = {}
    for split in ("train", "val"):
        ds = datasets.ImageFolder(str(data_dir / split), tf[split])
        wanted = {str(p) for p in chosen[split].paths}
        keep = [i for i, (p, _) in enumerate(ds.samples) if p in wanted]
        loaders[split] = torch.utils.data.DataLoader(
            torch.utils.data.Subset(ds, keep), batch_size=4, shuffle=True, num_workers=workers
        )
    model = build_model(weights, len(folder.classes), mode).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    criterion = nn.CrossEntropyLoss()
    train_time = 0.0
    seen = 0
    val_accs = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.train()
        for x, y in loaders["train"]:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            seen += len(y)
        scheduler.step()
        train_time += time.perf_counter() - t0
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in loaders["val"]:
                x, y = x.to(device), y.to(device)
                correct += (model(x).argmax(1) == y).sum().item()
                total += len(y)
        val_accs.append(correct / total)
    wall = time.perf_counter() - started
    return {
        "images_per_s": seen / train_time,
        "epoch_time_s": wall / epochs,
        "wall_time_s": wall,
        "final_val_acc": val_accs[-1],
        "best_val_acc": max(val_accs),
        "val_acc_per_epoch": val_accs,
    }


def ours_run(
    data_dir: Path,
    mode: str,
    epochs: int,
    image_size: int,
    limit: int | None,
    seed: int,
    device_name: str,
    weights: str,
    batch_size: int,
    workers: int,
    out: Path,
) -> dict[str, Any]:
    _, m = _train_quietly(
        data=str(data_dir),
        output_dir=str(out),
        run_id=f"bench-{mode}",
        weights=weights,
        mode=mode,
        epochs=epochs,
        image_size=image_size,
        limit=limit,
        batch_size=batch_size,
        workers=workers,
        device=device_name,
        seed=seed,
    )
    # Images over training seconds, as for the baseline (not the mean of per-epoch rates,
    # which would hide a slow first epoch).
    rates = [row["images_per_s"] for row in m["epochs"]]
    return {
        "images_per_s": len(rates) / sum(1 / r for r in rates),
        "epoch_time_s": m["wall_time_s"] / epochs,
        "wall_time_s": m["wall_time_s"],
        "final_val_acc": m["epochs"][-1]["val_acc"],
        "best_val_acc": m["best_val_acc"],
        "val_acc_per_epoch": [row["val_acc"] for row in m["epochs"]],
    }


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def bench(
    data: str | None = None,
    image_size: int = 112,
    limit: int | None = 192,
    finetune_epochs: int = 2,
    extract_epochs: int = 10,
    batch_size: int = 32,
    workers: int = 2,
    device_name: str = "auto",
    weights: str = "auto",
    seed: int = 0,
    stand_in_epochs: int = 3,
    repeats: int = 3,
) -> dict[str, Any]:
    if repeats < 1:
        raise WorkloadError("--repeats must be at least 1")
    device = select_device(device_name)
    with tempfile.TemporaryDirectory(prefix="tl-bench-") as tmp:
        data_dir = Path(data) if data else make_digits(Path(tmp) / "digits", seed=seed)
        scan_folder(data_dir)
        report: dict[str, Any] = {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            # Ours autocasts where the device computes it natively; the tutorial is float32.
            "precision": str(mixed_precision(device) or torch.float32).removeprefix("torch."),
            "data": str(data) if data else "digits (make-dataset)",
            "image_size": image_size,
            "limit": limit,
            "weights": weights,
            "batch_size": batch_size,
            "repeats": repeats,
        }
        if weights == "auto":
            weights = "imagenet" if imagenet_cached() else "stand-in"
        if weights == "stand-in":
            path, info = make_stand_in(
                data_dir,
                limit,
                seed,
                image_size,
                stand_in_epochs,
                batch_size,
                workers,
                device_name,
                Path(tmp),
            )
            report["weights_used"] = STAND_IN
            report["stand_in"] = info
            weights = str(path)
        elif weights == "imagenet":
            report["weights_used"] = "imagenet (torchvision IMAGENET1K_V1)"
        elif weights == "none":
            report["weights_used"] = "none (random init: accuracies say little)"
        else:
            report["weights_used"] = f"file {weights}"
        for mode, epochs in (("finetune", finetune_epochs), ("feature-extract", extract_epochs)):
            runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "ours": []}
            for rep in range(repeats):  # interleaved, so slow phases of a shared machine hit both
                runs["baseline"].append(
                    tutorial_run(data_dir, mode, epochs, image_size, limit, seed, device, weights)
                )
                runs["ours"].append(
                    ours_run(
                        data_dir,
                        mode,
                        epochs,
                        image_size,
                        limit,
                        seed,
                        device_name,
                        weights,
                        batch_size,
                        workers,
                        Path(tmp) / f"out-{rep}",
                    )
                )
            result: dict[str, Any] = {"epochs": epochs, "runs": runs}
            for name, reps in runs.items():
                result[name] = {
                    "wall_time_s": _summary([r["wall_time_s"] for r in reps]),
                    "steady_images_per_s": _summary([r["images_per_s"] for r in reps]),
                    "final_val_acc": _summary([r["final_val_acc"] for r in reps]),
                }
            base, ours = result["baseline"], result["ours"]
            result["wall_time_speedup"] = (
                base["wall_time_s"]["median"] / ours["wall_time_s"]["median"]
            )
            result["steady_throughput_ratio"] = (
                ours["steady_images_per_s"]["median"] / base["steady_images_per_s"]["median"]
            )
            result["final_val_acc_delta_points"] = 100 * (
                ours["final_val_acc"]["median"] - base["final_val_acc"]["median"]
            )
            report[mode] = result
    return report


def format_table(report: dict[str, Any]) -> str:
    lines = [
        f"device {report['device']}, torch {report['torch']}, {report['threads']} threads, "
        f"{report['image_size']}px, limit {report['limit']}, weights {report['weights']}: "
        f"{report['weights_used']}; ours in {report['precision']}, the tutorial in float32; "
        f"median [min-max] of {report['repeats']} runs",
    ]
    if "stand_in" in report:
        s = report["stand_in"]
        lines.append(
            f"stand-in: resnet18 from scratch, {s['epochs']} epochs on {s['train_images']} train "
            f"images outside the sample, val acc {s['val_acc']:.3f} on {s['val_images']}, "
            f"{s['wall_time_s']:.0f} s (not in the timings below)"
        )
    lines.append(
        f"{'recipe':<26}{'wall s (end to end)':>26}{'steady train img/s':>26}{'val acc':>9}"
    )

    def cell(x: dict[str, float], fmt: str) -> str:
        return f"{x['median']:{fmt}} [{x['min']:{fmt}}-{x['max']:{fmt}}]"

    for mode in ("finetune", "feature-extract"):
        r = report[mode]
        for name in ("baseline", "ours"):
            x = r[name]
            lines.append(
                f"{mode + ' ' + name:<26}{cell(x['wall_time_s'], '.1f'):>26}"
                f"{cell(x['steady_images_per_s'], '.1f'):>26}"
                f"{x['final_val_acc']['median']:>9.3f}"
            )
        lines.append(
            f"{mode + ' ratio':<26}{r['wall_time_speedup']:>25.2f}x"
            f"{r['steady_throughput_ratio']:>25.2f}x{r['final_val_acc_delta_points']:>+7.1f}pt"
        )
    lines.append(
        "wall s: the same epochs end to end, ours' one-off decode and feature caching included "
        "(the headline); steady train img/s: the training loop only (feature-extract: ours "
        "trains fc on cached features, so that ratio is not like for like)"
    )
    return "\n".join(lines)
