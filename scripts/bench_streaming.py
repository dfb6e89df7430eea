#!/usr/bin/env python3
"""Benchmark: a data set larger than the memory limit trains on the streaming path.

Makes a data set offline (make-dataset digits at --size px, each image linked --copies times
under a new name), whose decoded size exceeds --limit-mb. Then three runs of `train` on the
same images and settings (feature-extract with augmentation, so every epoch decodes batches
from the store; --epochs):

1. in memory, no limit (the reference throughput);
2. `--data-store auto` inside a memory cgroup limited to --limit-mb: it must choose the disk
   store, finish (not OOM-killed) and keep >= 80% of the reference throughput;
3. `--data-store memory` inside the same limit: the in-memory path the limit forbids, which
   the kernel is expected to kill (proof that the limit bites).

The limit is a cgroup v1 or v2 memory group made under /sys/fs/cgroup (needs root), the same
mechanism `docker run --memory` uses; swap is disabled in it. Peak memory is the group's
own high-water mark (memory.max_usage_in_bytes / memory.peak: page cache included) and the
trainer's peak RSS.

    sudo .venv/bin/python scripts/bench_streaming.py [--limit-mb 1024] [--copies 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CGROUP = Path("/sys/fs/cgroup")


class MemoryGroup:
    """A memory cgroup (v2 if mounted unified, else v1) with a hard limit and no swap."""

    def __init__(self, name: str, limit: int) -> None:
        self.v2 = (CGROUP / "cgroup.controllers").exists()
        self.path = (CGROUP if self.v2 else CGROUP / "memory") / name
        self.path.mkdir()
        if self.v2:
            (self.path / "memory.max").write_text(str(limit))
            (self.path / "memory.swap.max").write_text("0")
        else:
            (self.path / "memory.limit_in_bytes").write_text(str(limit))
            (self.path / "memory.swappiness").write_text("0")
            memsw = self.path / "memory.memsw.limit_in_bytes"
            if memsw.exists():
                memsw.write_text(str(limit))

    def wrap(self, command: list[str]) -> list[str]:
        procs = self.path / "cgroup.procs"
        return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", *command]

    def peak(self) -> int | None:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        try:
            return int((self.path / name).read_text())
        except (OSError, ValueError):
            return None

    def reset_peak(self) -> None:
        if not self.v2:
            (self.path / "memory.max_usage_in_bytes").write_text("0")

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def make_data(work: Path, size: int, copies: int) -> Path:
    digits = work / "digits"
    command = [sys.executable, "-m", "transfer_learning", "make-dataset", "digits", str(digits)]
    subprocess.run([*command, "--size", str(size)], check=True, stdout=subprocess.DEVNULL)
    big = work / "big"
    for src in digits.rglob("*.png"):
        rel = src.relative_to(digits)
        for k in range(copies):
            dst = big / rel.parent / f"{k}-{src.name}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.link(src, dst)
    return big


def train(
    data: Path,
    out: Path,
    run_id: str,
    store: str,
    args: argparse.Namespace,
    group: MemoryGroup | None,
) -> dict[str, object]:
    command = [sys.executable, "-m", "transfer_learning", "train", "--data", str(data)]
    command += ["--output-dir", str(out), "--run-id", run_id, "--weights", "none"]
    command += ["--mode", "feature-extract", "--augment", "--image-size", str(args.image_size)]
    command += ["--epochs", str(args.epochs), "--workers", str(args.workers), "--device", "cpu"]
    command += ["--data-store", store, "--cache-dir", str(out / "cache")]
    if group is not None:
        group.reset_peak()
        command = group.wrap(command)
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    record: dict[str, object] = {"returncode": result.returncode, "wall_s": round(wall, 1)}
    if group is not None:
        record["cgroup_peak_bytes"] = group.peak()
    metrics = out / run_id / "metrics.json"
    if result.returncode == 0 and metrics.is_file():
        m = json.loads(metrics.read_text())
        record.update(
            data_store=m["data_store"],
            images_per_s=[round(r["images_per_s"], 2) for r in m["epochs"]],
            steady_images_per_s=round(m["epochs"][-1]["images_per_s"], 2),
            peak_rss_bytes=m["peak_rss_bytes"],
            best_val_acc=m["best_val_acc"],
            learning_curve=[(r["train_loss"], r["val_acc"]) for r in m["epochs"]],
        )
    else:
        record["stderr_tail"] = result.stderr.strip().splitlines()[-3:]
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-mb", type=int, default=1024)
    parser.add_argument("--size", type=int, default=224, help="side of the images written")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT / "workload"), os.environ.get("PYTHONPATH")])
    )
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    limit = args.limit_mb << 20
    work = Path(tempfile.mkdtemp(prefix="tl-stream-"))
    group = MemoryGroup(f"tl-bench-{os.getpid()}", limit)
    try:
        data = make_data(work, args.size, args.copies)
        n = sum(1 for p in data.rglob("*.png"))
        side = round(args.image_size * 256 / 224)
        report: dict[str, object] = {
            "images": n,
            "decoded_bytes": n * 3 * side * side,
            "limit_bytes": limit,
            "cgroup": str(group.path),
            "cpus": os.cpu_count(),
        }
        report["memory_unlimited"] = train(data, work / "out", "mem", "memory", args, None)
        report["auto_limited"] = train(data, work / "out", "auto", "auto", args, group)
        report["memory_limited"] = train(data, work / "out", "oom", "memory", args, group)
        ref = report["memory_unlimited"].get("steady_images_per_s")  # type: ignore[union-attr]
        got = report["auto_limited"].get("steady_images_per_s")  # type: ignore[union-attr]
        if ref and got:
            report["streaming_vs_memory"] = round(float(got) / float(ref), 3)
            same = (
                report["auto_limited"]["learning_curve"]
                == report["memory_unlimited"]["learning_curve"]
            )  # type: ignore[index]
            report["same_learning_curve"] = same
    finally:
        group.remove()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
