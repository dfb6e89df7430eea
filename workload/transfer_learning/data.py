"""Data: ImageFolder scanning with clear errors, the digits data set, decoding, batches."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import random
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from transfer_learning import memory
from transfer_learning.errors import WorkloadError
from transfer_learning.precision import mixed_precision

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
    if root.exists() and not root.is_dir():
        raise WorkloadError(
            f"data root {root} is a file, not a directory: pass --data DIR with "
            "DIR/train/<class>/* and DIR/val/<class>/*"
        )
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
        missing = [name for name in classes if not (root / split / name).is_dir()]
        if split == "val" and missing:
            raise WorkloadError(
                f"{root}/val has no directory for class(es) {', '.join(missing)}: every class "
                "in train/ needs validation images in val/<class>/"
            )
        if not paths:
            raise WorkloadError(f"{root}/{split} has no images")
        splits[split] = Split(paths, targets)
    return FolderData(root, classes, splits["train"], splits["val"])


def check_folder(root: str | os.PathLike[str]) -> dict[str, object]:
    """The layout of `scan_folder`, at least one image Pillow opens in each split, and a digest.

    What a run would refuse, said before it starts (`check-data`); the digest (SHA-256 over
    every train/ and val/ file's path and content) names the data set's version, so a run on
    changed data is a new run.
    """
    folder = scan_folder(root)
    digest = hashlib.sha256()
    for split_name, split in (("train", folder.train), ("val", folder.val)):
        if not any(load_rgb(path) is not None for path in split.paths):
            raise WorkloadError(
                f"{folder.root}/{split_name} has {len(split.paths)} file(s) and no readable image "
                "(Pillow opened none): put JPEG or PNG images in "
                f"{folder.root}/{split_name}/<class>/"
            )
        for path in split.paths:
            digest.update(path.relative_to(folder.root).as_posix().encode() + b"\0")
            with path.open("rb") as fh:
                digest.update(hashlib.file_digest(fh, "sha256").digest())
    return {
        "root": str(folder.root),
        "classes": folder.classes,
        "train": len(folder.train.paths),
        "val": len(folder.val.paths),
        "digest": digest.hexdigest(),
    }


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
    """Open any image as RGB (grayscale, palette, RGBA converted); None when Pillow refuses it.

    Refusals are skipped and counted, whatever their kind: not an image, truncated, an
    unsupported mode, or over Pillow's decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`).
    """
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("P", "PA") and "transparency" in img.info:
                img = img.convert("RGBA")
            return img.convert("RGB")
    except Exception:  # Pillow refuses files in many ways (DecompressionBombError included)
        return None


def cache_size(image_size: int) -> int:
    """Side of the cached square: the tutorial's 256/224 margin for random crops."""
    return round(image_size * 256 / 224)


class _DecodeDataset(torch.utils.data.Dataset):
    """Decode + resize (shorter side) + centre crop to a uint8 CHW array, or None.

    A numpy array, not a tensor: a loader worker sends it back pickled through its pipe,
    where a tensor would travel through /dev/shm (64 MB by default in Docker).
    """

    def __init__(self, paths: Sequence[Path], side: int) -> None:
        self.paths = list(paths)
        self.side = side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray | None:
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
        return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))


def _keep_all(batch: list) -> list:
    return batch


# A batch of 16 images decodes in well under a second; a worker silent this long is stuck.
LOADER_TIMEOUT_S = 300


def _worker_failure(exc: BaseException, workers: int) -> WorkloadError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return WorkloadError(
        f"a data-loading worker failed ({first}): a worker that is killed has usually run out "
        f"of memory (the kernel's OOM killer) or of shared memory (/dev/shm); pass fewer "
        f"--workers than {workers} (--workers 0 decodes in this process) or give the machine "
        "or container more memory"
    )


def _die_with_parent(parent: int, _worker_id: int) -> None:
    """A loader worker ends when the process that started it does, however it ends.

    The kernel's OOM killer or a SIGKILL gives the training process no chance to stop its
    workers; each then blocks for ever on its full result queue, holding its memory (a
    container's limit stays used up) and the run's output pipes (a caller waiting for EOF
    hangs). Linux's parent-death signal ends the worker with its parent instead.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def decoded(split: Split, side: int, workers: int) -> Iterator[np.ndarray | None]:
    """Each image of `split` decoded by `workers` loader processes, in order (None: skipped).

    At most workers x 2 batches are in flight, so memory does not grow with the data set. A
    worker that dies or stops answering ends the run with one line naming the cause and the fix,
    never a hang; a training process that is killed takes its workers with it.
    """
    loader = torch.utils.data.DataLoader(
        _DecodeDataset(split.paths, side),
        batch_size=16,
        num_workers=workers,
        collate_fn=_keep_all,
        timeout=LOADER_TIMEOUT_S if workers else 0,
        worker_init_fn=functools.partial(_die_with_parent, os.getpid()),
    )
    try:
        for batch in loader:
            yield from batch
    except RuntimeError as exc:
        if workers and "DataLoader" in str(exc):  # killed, exited, or timed out
            raise _worker_failure(exc, workers) from None
        raise


class DiskImages:
    """Decoded uint8 images in a file, read a batch at a time through the page cache.

    Reads with pread, not a memory map: the pages stay in the kernel's (reclaimable) page cache
    and out of this process's resident set, so a memory limit sees only the batch in hand.
    """

    def __init__(self, path: Path, count: int, side: int) -> None:
        self.path, self.count, self.side = path, count, side
        self.row = 3 * side * side
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.count

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.count, 3, self.side, self.side)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        rows = idx.reshape(-1).tolist()
        out = np.empty((len(rows), 3, self.side, self.side), dtype=np.uint8)
        flat = out.reshape(len(rows), self.row)
        for k, i in enumerate(rows):
            flat[k] = np.frombuffer(os.pread(self._fd, self.row, i * self.row), dtype=np.uint8)
        return torch.from_numpy(out)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            os.close(self._fd)


Images = torch.Tensor | DiskImages


def _collect(
    split: Split, side: int, workers: int, write: Callable[[np.ndarray], None]
) -> tuple[torch.Tensor, list[Path]]:
    targets: list[int] = []
    skipped: list[Path] = []
    for index, item in enumerate(decoded(split, side, workers)):
        if item is None:
            skipped.append(split.paths[index])
        else:
            write(item)
            targets.append(split.targets[index])
    return torch.tensor(targets, dtype=torch.long), skipped


def decode_split(
    split: Split, side: int, workers: int
) -> tuple[torch.Tensor, torch.Tensor, list[Path]]:
    """Decode a split into memory: (uint8 N x 3 x side x side, int64 targets, skipped paths).

    One preallocated array is filled in place: the peak is the data set, not twice it.
    """
    images = np.empty((len(split.paths), 3, side, side), dtype=np.uint8)
    count = 0

    def write(item: np.ndarray) -> None:
        nonlocal count
        images[count] = item
        count += 1

    targets, skipped = _collect(split, side, workers, write)
    return torch.from_numpy(images[:count]), targets, skipped


def _cache_key(split: Split, side: int) -> str:
    h = hashlib.sha256(f"v1 {side}\n".encode())
    for path, target in zip(split.paths, split.targets, strict=True):
        st = path.stat()
        h.update(f"{path.resolve()}\0{target}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def decode_split_to_disk(
    split: Split, side: int, workers: int, cache_dir: Path
) -> tuple[DiskImages, torch.Tensor, list[Path]]:
    """Decode a split once into `cache_dir` (reused while the files are unchanged)."""
    key = _cache_key(split, side)
    data, meta = cache_dir / f"{key}.u8", cache_dir / f"{key}.json"
    if data.is_file() and meta.is_file():
        info = json.loads(meta.read_text())
        skipped = [Path(p) for p in info["skipped"]]
        targets = torch.tensor(info["targets"], dtype=torch.long)
        return DiskImages(data, len(targets), side), targets, skipped
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = data.with_name(f"{data.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as fh:
            targets, skipped = _collect(split, side, workers, lambda item: fh.write(item.data))
        os.replace(tmp, data)
        meta.write_text(
            json.dumps({"targets": targets.tolist(), "skipped": [str(p) for p in skipped]})
        )
    except OSError as exc:
        raise WorkloadError(
            f"cannot write the decoded-image cache in {cache_dir} ({exc.strerror or exc}): "
            "pass --cache-dir DIR on a disk with room, or --data-store memory"
        ) from None
    return DiskImages(data, len(targets), side), targets, skipped


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "transfer_learning"


@dataclass
class StorePlan:
    """Where decoded images live for a run, and why (recorded in metrics.json)."""

    kind: str  # "memory" or "disk"
    reason: str
    decoded_bytes: int
    available_bytes: int
    memory_source: str
    cache_dir: str | None = None

    def record(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "reason": self.reason,
            "decoded_bytes": self.decoded_bytes,
            "available_bytes": self.available_bytes,
            "memory_source": self.memory_source,
            "cache_dir": self.cache_dir,
        }


# Decoded images may take this share of the memory available; the rest is for the model,
# activations, loader workers and the page cache.
MEMORY_SHARE = 0.5


def plan_store(
    folder: FolderData,
    image_size: int,
    limit: int | None,
    seed: int,
    requested: str = "auto",
    cache_dir: str | None = None,
    mem: memory.Memory | None = None,
) -> StorePlan:
    """In memory where the decoded images fit the memory actually available, else on disk."""
    side = cache_size(image_size)
    n = len(limit_split(folder.train, limit, seed).paths) + len(
        limit_split(folder.val, limit, seed + 1).paths
    )
    need = n * 3 * side * side
    mem = mem or memory.available()
    share = int(mem.available * MEMORY_SHARE)
    size, avail = memory.human(need), memory.human(mem.available)
    if requested == "memory":
        kind, reason = "memory", f"--data-store memory ({size} decoded, {avail} available)"
    elif requested == "disk":
        kind, reason = "disk", f"--data-store disk ({size} decoded, {avail} available)"
    elif need <= share:
        kind = "memory"
        reason = f"{size} decoded fits in half of the {avail} available ({mem.source})"
    else:
        kind = "disk"
        reason = f"{size} decoded exceeds half of the {avail} available ({mem.source})"
    where = str(Path(cache_dir) if cache_dir else default_cache_dir()) if kind == "disk" else None
    return StorePlan(kind, reason, need, mem.available, mem.source, where)


@dataclass
class CachedData:
    classes: list[str]
    train_x: Images
    train_y: torch.Tensor
    val_x: Images
    val_y: torch.Tensor
    skipped: list[Path]
    plan: StorePlan | None = None


def load_cached(
    root: str | os.PathLike[str],
    image_size: int,
    limit: int | None,
    seed: int,
    workers: int,
    folder: FolderData | None = None,
    plan: StorePlan | None = None,
) -> CachedData:
    """Scan (unless given the scan), sample, decode both splits once; warn once about junk.

    Without a plan, or with a memory plan, the images are decoded into memory; with a disk
    plan, into (or from) the cache directory.
    """
    folder = folder or scan_folder(root)
    side = cache_size(image_size)
    train = limit_split(folder.train, limit, seed)
    val = limit_split(folder.val, limit, seed + 1)
    decoded_splits = []
    for split in (train, val):
        if plan is not None and plan.kind == "disk" and plan.cache_dir:
            decoded_splits.append(decode_split_to_disk(split, side, workers, Path(plan.cache_dir)))
        else:
            decoded_splits.append(decode_split(split, side, workers))
    (train_x, train_y, skipped_train), (val_x, val_y, skipped_val) = decoded_splits
    skipped = skipped_train + skipped_val
    if skipped:
        print(
            f"warning: skipped {len(skipped)} file(s) that are not readable images "
            f"(first: {skipped[0]})",
            file=sys.stderr,
        )
    if limit is not None and limit < len(folder.classes):
        raise WorkloadError(
            f"--limit {limit} is smaller than the {len(folder.classes)} classes of "
            f"{folder.root}: every class needs a train image; pass --limit {len(folder.classes)} "
            "or more"
        )
    for index, name in enumerate(folder.classes):
        if not bool((train_y == index).any()):
            raise WorkloadError(
                f"class {name!r} has no readable images in {folder.root}/train/{name}"
            )
    if len(val_y) == 0:
        raise WorkloadError(f"{folder.root}/val has no readable images")
    return CachedData(folder.classes, train_x, train_y, val_x, val_y, skipped, plan)


class Batcher:
    """Turns cached uint8 images into normalised float batches on the device."""

    def __init__(
        self,
        image_size: int,
        device: torch.device,
        channels_last: bool | None = None,
        amp: bool = True,
    ) -> None:
        self.size = image_size
        self.device = device
        # Per device, from measurement: channels_last on CUDA (tensor-core kernels) and with
        # a CPU's bf16 autocast (its oneDNN kernels: 1.2x a training step, 5x the stem's max
        # pooling at 224 px, BENCHMARKS.md); in float32 on a CPU it did not pay (0.87x to
        # 1.01x for resnet18), so contiguous there.
        if channels_last is None:
            channels_last = device.type == "cuda" or mixed_precision(device, amp) is not None
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
