#!/usr/bin/env python3
"""Benchmark: resnet18 training steps on this CPU in float32 and bf16 autocast, each
contiguous and channels_last.

The workload autocasts to bf16 on a CPU that computes it itself (AVX512-BF16 or AMX,
`transfer_learning.precision.mixed_precision`); this measures what that choice is worth here.
Synthetic batches, SGD with momentum, the four variants interleaved, median [min-max] of
--repeats, and each one's ratio to float32:

    .venv/bin/python scripts/bench_cpu_precision.py [--image-size 224] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision
from transfer_learning.precision import cpu_computes_bf16


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="steps per timing")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats must be at least 3 (a median and a spread)")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    y = torch.randint(0, 10, (args.batch_size,))

    variants = {  # name: (bf16 autocast, channels_last)
        "float32": (False, False),
        "float32 channels_last": (False, True),
        "bf16": (True, False),
        "bf16 channels_last": (True, True),
    }

    def step(bf16: bool, channels_last: bool) -> None:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model.to(memory_format=fmt)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(
                model(x.contiguous(memory_format=fmt)).float(), y
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    rates: dict[str, list[float]] = {name: [] for name in variants}
    for choice in variants.values():  # warm up: oneDNN builds its kernels on first use
        step(*choice)
    for _ in range(args.repeats):  # interleaved, so a load change hits every variant
        for name, choice in variants.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step(*choice)
            rates[name].append(args.steps * args.batch_size / (time.perf_counter() - start))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: "
        f"{cpu_computes_bf16()}, {args.image_size} px, batch {args.batch_size}, "
        f"median [min-max] of {args.repeats}, ratio to float32"
    )
    base = statistics.median(rates["float32"])
    for name, r in rates.items():
        median = statistics.median(r)
        print(f"{name:<23}{median:8.1f} img/s [{min(r):.1f}-{max(r):.1f}]  {median / base:.2f}x")


if __name__ == "__main__":
    main()
