"""Data: ImageFolder scanning with clear errors, the digits data set, decoding, batches."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from transfer_learning.errors import WorkloadError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Split:
    """One split of an ImageFolder tree: file paths and their class indices."""

    paths: list[Path]
    targets: list[int]


@dataclass
class FolderData:
    root: Path
    classes: list[str]
    train: Split
    val: Split
    skipped: list[Path] = field(default_factory=list)


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files(class_dir: Path) -> list[Path]:
    return sorted(p for p in class_dir.rglob("*") if p.is_file() and not p.name.startswith("."))


def scan_folder(root: str | os.PathLike[str]) -> FolderData:
    """Find `<root>/{train,val}/<class>/*`; every problem is a WorkloadError naming the fix."""
    root = Path(root)
    if not root.is_dir():
        raise WorkloadError(
            f"data root {root} does not exist: pass --data DIR with DIR/train/<class>/* and "
            "DIR/val/<class>/* (make one with `make-dataset digits DIR` or `fetch`)"
        )
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise WorkloadError(
                f"data root {root} has no {split}/ directory: expected {root}/{split}/<class>/*"
            )
    classes = _class_dirs(root / "train")
    if len(classes) < 2:
        raise WorkloadError(
            f"{root}/train has {len(classes)} class director{'y' if len(classes) == 1 else 'ies'}"
            f"{' (' + classes[0] + ')' if classes else ''}: classification needs at least two"
        )
    extra = sorted(set(_class_dirs(root / "val")) - set(classes))
    if extra:
        raise WorkloadError(
            f"{root}/val has classes not in train/: {', '.join(extra)}; "
            "train/ and val/ must use the same class directories"
        )
    splits = {}
    for split in ("train", "val"):
        paths: list[Path] = []
        targets: list[int] = []
        for index, name in enumerate(classes):
            class_dir = root / split / name
            files = _files(class_dir) if class_dir.is_dir() else []
            if split == "train" and not files:
                raise WorkloadError(
                    f"class {name!r} has no images in {class_dir}: add images or remove the directory"
                )
            paths += files
            targets += [index] * len(files)
        if not paths:
            raise WorkloadError(f"{root}/{split} has no images")
        splits[split] = Split(paths, targets)
    return FolderData(root, classes, splits["train"], splits["val"])


def limit_split(split: Split, limit: int | None, seed: int) -> Split:
    """A seeded sample of at most `limit` images, every class kept where possible."""
    if limit is None or limit >= len(split.paths):
        return split
    rng = random.Random(seed)
    order = list(range(len(split.paths)))
    rng.shuffle(order)
    # Round-robin over classes so a small limit still sees every class.
    by_class: dict[int, list[int]] = {}
    for i in order:
        by_class.setdefault(split.targets[i], []).append(i)
    chosen: list[int] = []
    queues = [by_class[k] for k in sorted(by_class)]
    while len(chosen) < limit:
        for queue in queues:
            if queue and len(chosen) < limit:
                chosen.append(queue.pop())
    chosen.sort()
    return Split([split.paths[i] for i in chosen], [split.targets[i] for i in chosen])


def load_rgb(path: Path) -> Image.Image | None:
    """Open any image as RGB (grayscale, palette, RGBA converted); None when it is not one."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("P", "PA") and "transparency" in img.info:
                img = img.convert("RGBA")
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def cache_size(image_size: int) -> int:
    """Side of the cached square: the tutorial's 256/224 margin for random crops."""
    return round(image_size * 256 / 224)


class _DecodeDataset(torch.utils.data.Dataset):
    """Decode + resize (shorter side) + centre crop to a uint8 CHW tensor, or None."""

    def __init__(self, paths: Sequence[Path], side: int) -> None:
        self.paths = list(paths)
        self.side = side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor | None:
        img = load_rgb(self.paths[index])
        if img is None:
            return None
        w, h = img.size
        scale = self.side / min(w, h)
        img = img.resize(
            (max(self.side, round(w * scale)), max(self.side, round(h * scale))),
            Image.Resampling.BILINEAR,
        )
        w, h = img.size
        left, top = (w - self.side) // 2, (h - self.side) // 2
        img = img.crop((left, top, left + self.side, top + self.side))
        array = np.asarray(img, dtype=np.uint8).copy()
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _keep_all(batch: list) -> list:
    return batch


def decode_split(
    split: Split, side: int, workers: int
) -> tuple[torch.Tensor, torch.Tensor, list[Path]]:
    """Decode a split once into (uint8 N x 3 x side x side, int64 targets, skipped paths)."""
    loader = torch.utils.data.DataLoader(
        _DecodeDataset(split.paths, side),
        batch_size=32,
        num_workers=workers,
        collate_fn=_keep_all,
    )
    images: list[torch.Tensor] = []
    targets: list[int] = []
    skipped: list[Path] = []
    index = 0
    for batch in loader:
        for item in batch:
            if item is None:
                skipped.append(split.paths[index])
            else:
                images.append(item)
                targets.append(split.targets[index])
            index += 1
    if not images:
        return (
            torch.empty(0, 3, side, side, dtype=torch.uint8),
            torch.empty(0, dtype=torch.long),
            skipped,
        )
    return torch.stack(images), torch.tensor(targets, dtype=torch.long), skipped


@dataclass
class CachedData:
    classes: list[str]
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    skipped: list[Path]


def load_cached(
    root: str | os.PathLike[str], image_size: int, limit: int | None, seed: int, workers: int
) -> CachedData:
    """Scan, sample, decode both splits once; warn once about files that are not images."""
    folder = scan_folder(root)
    side = cache_size(image_size)
    train = limit_split(folder.train, limit, seed)
    val = limit_split(folder.val, limit, seed + 1)
    train_x, train_y, skipped_train = decode_split(train, side, workers)
    val_x, val_y, skipped_val = decode_split(val, side, workers)
    skipped = skipped_train + skipped_val
    if skipped:
        print(
            f"warning: skipped {len(skipped)} file(s) that are not readable images "
            f"(first: {skipped[0]})",
            file=sys.stderr,
        )
    for index, name in enumerate(folder.classes):
        if not bool((train_y == index).any()):
            raise WorkloadError(
                f"class {name!r} has no readable images in {folder.root}/train/{name}"
            )
    if len(val_y) == 0:
        raise WorkloadError(f"{folder.root}/val has no readable images")
    return CachedData(folder.classes, train_x, train_y, val_x, val_y, skipped)


class Batcher:
    """Turns cached uint8 images into normalised float batches on the device."""

    def __init__(self, image_size: int, device: torch.device, channels_last: bool = True) -> None:
        self.size = image_size
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
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


def make_digits(
    out_dir: str | os.PathLike[str], size: int = 64, val_fraction: float = 0.25, seed: int = 0
) -> Path:
    """Write scikit-learn's bundled 8x8 digits as upscaled RGB PNGs in an ImageFolder tree."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0 < val_fraction < 1:
        raise WorkloadError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    if size < 8:
        raise WorkloadError(f"--size must be at least 8 pixels, got {size}")
    out = Path(out_dir)
    digits = load_digits()
    indices = np.arange(len(digits.target))
    train_idx, val_idx = train_test_split(
        indices, test_size=val_fraction, random_state=seed, stratify=digits.target
    )
    for split, chosen in (("train", train_idx), ("val", val_idx)):
        for i in sorted(chosen):
            label = str(int(digits.target[i]))
            pixels = (digits.images[i] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
            img = Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.BICUBIC)
            target = out / split / label / f"{i:04d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            img.convert("RGB").save(target)
    return out
