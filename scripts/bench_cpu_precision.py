#!/usr/bin/env python3
"""Benchmark: resnet18 training steps on this CPU in float32 and under bf16 autocast.

The workload autocasts to bf16 on a CPU that computes it itself (AVX512-BF16 or AMX,
`transfer_learning.trainer.mixed_precision`); this measures what that choice is worth here.
Synthetic batches, SGD with momentum, the two precisions interleaved, median [min-max] of
--repeats, and their ratio:

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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    rates: dict[bool, list[float]] = {False: [], True: []}
    for bf16 in rates:  # warm up: oneDNN builds its kernels on first use
        step(bf16)
    for _ in range(args.repeats):
        for bf16 in rates:
            start = time.perf_counter()
            for _ in range(args.steps):
                step(bf16)
            rates[bf16].append(args.steps * args.batch_size / (time.perf_counter() - start))
    native = cpu_computes_bf16()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {native}, "
        f"{args.image_size} px, batch {args.batch_size}, median [min-max] of {args.repeats}"
    )
    for bf16, name in ((False, "float32"), (True, "bf16 autocast")):
        r = rates[bf16]
        print(f"{name:<15}{statistics.median(r):8.1f} img/s [{min(r):.1f}-{max(r):.1f}]")
    ratio = statistics.median(rates[True]) / statistics.median(rates[False])
    print(f"bf16 / float32: {ratio:.2f}x")


if __name__ == "__main__":
    main()
