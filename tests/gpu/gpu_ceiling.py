"""What the GPU alone can do: resnet18 training steps on synthetic batches already on it.

`python tests/gpu/gpu_ceiling.py IMAGE_SIZE`: images/s of forward + backward + SGD step,
(a) the tutorial's setting (batch 4, fp32, contiguous) and (b) ours (bf16 autocast,
channels_last) at batch 32 and 256, with no input pipeline and no per-step sync. Against
the CLI's figures this says whether the input side or the GPU is the limit. One JSON line.
"""

from __future__ import annotations

import json
import sys
import time

import torch
from torch import nn
from torchvision.models import resnet18


def rate(batch: int, size: int, amp: bool, channels_last: bool, steps: int = 30) -> float:
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = resnet18(num_classes=10).cuda().to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device="cuda").contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device="cuda")
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(8):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def main() -> int:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 224
    torch.backends.cudnn.benchmark = True
    result = {
        "image_size": size,
        "tutorial_b4_fp32_contiguous": rate(4, size, False, False, steps=100),
        "ours_b32_bf16_channels_last": rate(32, size, True, True),
        "ours_b256_bf16_channels_last": rate(256, size, True, True),
        "b256_fp32_contiguous": rate(256, size, False, False),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
