"""`python cli_probe.py RECORD.json ARGS...` = `python -m transfer_learning ARGS...`, observed.

A global forward hook (torch's public `register_module_forward_hook`) notes what every
Conv2d call of the CLI run saw: the input's device and memory format, the output's dtype
(bfloat16/float16 under autocast), and whether it ran in training with gradients. The
counts go to RECORD.json when the CLI returns, whatever its exit code. The workload itself
is not touched: this is the CLI as a user runs it, watched from outside.
"""

from __future__ import annotations

import json
import runpy
import sys
from collections import Counter

import torch
from torch import nn


def _memory_format(x: torch.Tensor) -> str:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    return "contiguous" if x.is_contiguous() else "strided"


def main() -> int:
    record_path = sys.argv[1]
    sys.argv = ["transfer_learning", *sys.argv[2:]]
    seen: Counter[tuple[str, str, str, bool, bool]] = Counter()

    def hook(module: nn.Module, args: tuple[object, ...], output: object) -> None:
        if isinstance(module, nn.Conv2d) and args and isinstance(args[0], torch.Tensor):
            x = args[0]
            dtype = str(output.dtype) if isinstance(output, torch.Tensor) else "?"
            key = (
                x.device.type,
                _memory_format(x),
                dtype,
                module.training,
                torch.is_grad_enabled(),
            )
            seen[key] += 1

    handle = nn.modules.module.register_module_forward_hook(hook)
    code: object = 0
    try:
        runpy.run_module("transfer_learning", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
    finally:
        handle.remove()
        fields = ("device", "memory_format", "dtype", "training", "grad")
        calls = [dict(zip(fields, key, strict=True), count=n) for key, n in seen.items()]
        with open(record_path, "w", encoding="utf-8") as fh:
            json.dump({"conv_calls": calls}, fh, indent=1)
    return code if isinstance(code, int) else 1


if __name__ == "__main__":
    raise SystemExit(main())
