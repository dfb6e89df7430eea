"""Which arithmetic a device trains in: the autocast dtype, chosen per device."""

from __future__ import annotations

import torch


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic of its own (AVX512-BF16 or AMX)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def mixed_precision(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """The autocast dtype where the device computes it natively; None: float32 throughout.

    From measurement (BENCHMARKS.md): CUDA's bf16 (fp16 before Ampere) tensor cores, and on a
    CPU with AVX512-BF16 or AMX, bf16 makes resnet18's training steps at 224 px 2.1x faster
    (2.5x in channels_last; oneDNN). A CPU without them would emulate bf16 (not measured):
    float32 there.
    """
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_computes_bf16():
        return torch.bfloat16
    return None
