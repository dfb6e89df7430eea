"""ImageFolder scanning, sampling, image conversion and the digits data set."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transfer_learning.data import (
    Batcher,
    Split,
    check_folder,
    decode_split,
    limit_split,
    load_rgb,
    make_digits,
    scan_folder,
)
from transfer_learning.errors import WorkloadError


def _png(path: Path, mode: str = "RGB", size: int = 12) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    img = Image.fromarray(pixels, "RGB")
    if mode == "P":
        img = img.quantize(8)
    elif mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return path


def _tree(root: Path, classes: dict[str, tuple[int, int]]) -> Path:
    for name, (n_train, n_val) in classes.items():
        (root / "train" / name).mkdir(parents=True, exist_ok=True)
        (root / "val" / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_train):
            _png(root / "train" / name / f"{i}.png")
        for i in range(n_val):
            _png(root / "val" / name / f"{i}.png")
    return root


def test_scan_finds_classes_and_files(tmp_path: Path) -> None:
    data = scan_folder(_tree(tmp_path, {"ants": (3, 1), "bees": (2, 2)}))
    assert data.classes == ["ants", "bees"]
    assert data.train.targets == [0, 0, 0, 1, 1]
    assert data.val.targets == [0, 1, 1]


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda root: root / "missing", "does not exist"),
        (lambda root: _tree(root, {"a": (1, 1), "b": (1, 1)}) and _rm(root / "train"), "no train/"),
        (lambda root: _tree(root, {"a": (1, 1), "b": (1, 1)}) and _rm(root / "val"), "no val/"),
        (lambda root: _tree(root, {"a": (2, 1), "b": (0, 1)}), "class 'b' has no images"),
        (lambda root: _tree(root, {"only": (2, 1)}), "at least two"),
        (
            lambda root: _tree(root, {"a": (1, 1), "b": (1, 1)}) and _mk(root / "val" / "c"),
            "not in train/",
        ),
    ],
    ids=[
        "missing-root",
        "missing-train",
        "missing-val",
        "empty-class",
        "one-class",
        "extra-val-class",
    ],
)
def test_scan_rejects_bad_layouts(tmp_path: Path, setup, expected: str) -> None:
    root = setup(tmp_path / "data") or tmp_path / "data"
    with pytest.raises(WorkloadError, match=expected):
        scan_folder(root if isinstance(root, Path) else tmp_path / "data")


def _rm(path: Path) -> Path:
    import shutil

    shutil.rmtree(path)
    return path.parent


def _mk(path: Path) -> Path:
    path.mkdir(parents=True)
    return path.parent.parent


def test_limit_split_is_seeded_and_keeps_every_class(tmp_path: Path) -> None:
    data = scan_folder(_tree(tmp_path, {"a": (10, 1), "b": (10, 1), "c": (10, 1)}))
    first = limit_split(data.train, 6, seed=3)
    assert limit_split(data.train, 6, seed=3) == first
    assert len(first.paths) == 6
    assert sorted(set(first.targets)) == [0, 1, 2]
    assert limit_split(data.train, 6, seed=4) != first
    assert limit_split(data.train, None, seed=3) is data.train


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "RGB"])
def test_load_rgb_converts_modes(tmp_path: Path, mode: str) -> None:
    img = load_rgb(_png(tmp_path / f"x-{mode}.png", mode))
    assert img is not None
    assert img.mode == "RGB"
    assert img.size == (12, 12)


def test_non_images_are_skipped_and_reported(tmp_path: Path) -> None:
    good = _png(tmp_path / "a" / "good.png", "L")
    corrupt = tmp_path / "a" / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    text = tmp_path / "a" / "notes.txt"
    text.write_text("hello")
    assert load_rgb(corrupt) is None
    assert load_rgb(text) is None
    images, targets, skipped = decode_split(Split([good, corrupt, text], [0, 0, 0]), 9, 0)
    assert images.shape == (1, 3, 9, 9)
    assert targets.tolist() == [0]
    assert skipped == [corrupt, text]


def test_make_digits_writes_a_seeded_imagefolder(tmp_path: Path) -> None:
    root = make_digits(tmp_path / "d1", size=16, seed=5)
    data = scan_folder(root)
    assert data.classes == [str(i) for i in range(10)]
    assert len(data.train.paths) + len(data.val.paths) == 1797
    assert abs(len(data.val.paths) / 1797 - 0.25) < 0.01
    with Image.open(data.train.paths[0]) as img:
        assert (img.mode, img.size) == ("RGB", (16, 16))
    again = scan_folder(make_digits(tmp_path / "d2", size=16, seed=5))
    assert [p.name for p in again.val.paths] == [p.name for p in data.val.paths]


def test_batcher_crops_normalises_and_replays() -> None:
    batcher = Batcher(8, torch.device("cpu"), amp=False)
    images = torch.randint(0, 256, (5, 3, 10, 10), dtype=torch.uint8)
    val = batcher(images, augment=False)
    assert val.shape == (5, 3, 8, 8)
    assert val.is_contiguous()  # float32 on CPU: contiguous, measured faster there
    assert batcher(images, augment=False).equal(
        Batcher(8, torch.device("cpu"), True)(images, False)
    )
    assert Batcher(8, torch.device("cpu"), True)(images, False).is_contiguous(
        memory_format=torch.channels_last
    )
    expected = (images[0, 0, 1, 1].float() / 255 - 0.485) / 0.229
    assert val[0, 0, 0, 0].item() == pytest.approx(expected.item(), rel=1e-5)
    a = batcher(images, augment=True, generator=torch.Generator().manual_seed(7))
    b = batcher(images, augment=True, generator=torch.Generator().manual_seed(7))
    c = batcher(images, augment=True, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_a_decompression_bomb_is_skipped_and_counted(tmp_path: Path) -> None:
    # 1-bit pixels: 190 million of them (over twice Image.MAX_IMAGE_PIXELS) in a small file.
    bomb = tmp_path / "bomb.png"
    Image.new("1", (14_000, 13_600)).save(bomb)
    good = _png(tmp_path / "good.png")
    assert load_rgb(bomb) is None
    images, targets, skipped = decode_split(Split([good, bomb], [0, 1]), 8, 0)
    assert images.shape[0] == 1 and targets.tolist() == [0]
    assert skipped == [bomb]


def _split(root: Path, n: int = 6) -> Split:
    paths = [_png(root / f"{i}.png", size=12 + i) for i in range(n)]
    return Split(paths, [i % 2 for i in range(n)])


def test_disk_cache_holds_the_same_pixels_and_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transfer_learning import data

    split = _split(tmp_path / "imgs")
    images, targets, _ = data.decode_split(split, 10, 0)
    disk, disk_targets, _ = data.decode_split_to_disk(split, 10, 0, tmp_path / "cache")
    idx = torch.tensor([4, 0, 2])
    assert torch.equal(disk[idx], images[idx]) and torch.equal(disk_targets, targets)
    assert len(list((tmp_path / "cache").glob("*.u8"))) == 1

    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded again")

    monkeypatch.setattr(data, "decoded", no_decoding)
    again, _, _ = data.decode_split_to_disk(split, 10, 0, tmp_path / "cache")
    assert torch.equal(again[idx], images[idx])


def test_plan_keeps_memory_when_it_fits_else_disk() -> None:
    from transfer_learning.data import FolderData, plan_store
    from transfer_learning.memory import Memory

    folder = FolderData(Path("/d"), ["a", "b"], Split([Path("x")] * 100, [0] * 100), Split([], []))
    side = 256  # image size 224
    need = 100 * 3 * side * side
    small = plan_store(folder, 224, None, 0, mem=Memory(need * 4, "cgroup v2 /x/memory.max = 1"))
    assert small.kind == "memory" and "fits" in small.reason and "memory.max" in small.reason
    big = plan_store(folder, 224, None, 0, "auto", "/c", Memory(need, "cgroup v1 limit"))
    assert big.kind == "disk" and "exceeds" in big.reason and big.cache_dir == "/c"
    assert plan_store(folder, 224, None, 0, "memory", mem=Memory(1, "x")).kind == "memory"
    assert plan_store(folder, 224, None, 0, "disk", mem=Memory(need * 9, "x")).kind == "disk"


def test_workers_send_arrays_not_shared_memory_tensors(tmp_path: Path) -> None:
    from transfer_learning.data import _DecodeDataset

    # A tensor would come back through /dev/shm, which a big data set fills (then it hangs).
    item = _DecodeDataset(_split(tmp_path, 1).paths, 8)[0]
    assert isinstance(item, np.ndarray) and item.shape == (3, 8, 8)


def _die_in_worker(self: object, index: int) -> None:
    if torch.utils.data.get_worker_info() is not None:
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer would


def test_a_killed_worker_ends_the_run_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transfer_learning import data

    monkeypatch.setattr(data._DecodeDataset, "__getitem__", _die_in_worker)
    started = time.monotonic()
    with pytest.raises(WorkloadError, match=r"worker failed .*--workers 0"):
        data.decode_split(_split(tmp_path), 8, 1)
    assert time.monotonic() - started < 60


def test_check_folder_names_the_data_set_by_its_content(tmp_path: Path) -> None:
    first = check_folder(_tree(tmp_path / "a", {"ants": (2, 1), "bees": (1, 1)}))
    assert first["classes"] == ["ants", "bees"]
    assert (first["train"], first["val"]) == (3, 2)
    # The same files elsewhere are the same data set; one changed image is another.
    import shutil

    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert check_folder(tmp_path / "b")["digest"] == first["digest"]
    _png(tmp_path / "b" / "val" / "bees" / "0.png", size=13)
    assert check_folder(tmp_path / "b")["digest"] != first["digest"]
    # A renamed image (another class) is another data set too.
    (tmp_path / "a" / "train" / "ants" / "1.png").rename(
        tmp_path / "a" / "train" / "bees" / "9.png"
    )
    assert check_folder(tmp_path / "a")["digest"] != first["digest"]


def test_check_folder_refuses_a_split_without_a_readable_image(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for split in ("train", "val"):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            (root / split / name / "x.jpg").write_bytes(b"not an image")
    _png(root / "train" / "a" / "ok.png")  # train is readable, val is not
    with pytest.raises(WorkloadError, match=r"data/val has 2 file\(s\) and no readable image"):
        check_folder(root)
    with pytest.raises(WorkloadError, match="has no val/ directory"):
        shutil_rm(root / "val")
        check_folder(root)


def shutil_rm(path: Path) -> None:
    import shutil

    shutil.rmtree(path)
