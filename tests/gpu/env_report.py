"""Python, torch, torchvision, CUDA, the GPU, and the packages the workload imports; JSON out.

Missing packages are named on stderr with what needs them, so a GPU image without one of
them is a clear line in the log, not a traceback halfway through a step.
"""

from __future__ import annotations

import importlib
import json
import platform
import sys

NEEDS = {
    "numpy": "the workload's import (data.py): train, bench, make-dataset",
    "PIL": "the workload's import (data.py, pillow): image decoding",
    "sklearn": "make-dataset digits and report.py's confusion matrix (end of every train)",
    "matplotlib": "report.py's curves.png and confusion.png (end of every train)",
    "tqdm": "progress bars (only on a terminal)",
    "pytest": "the CUDA tests",
    "xdist": "optional: the CUDA tests in parallel",
}


def _nccl_version() -> str | None:
    import torch

    try:
        version = torch.cuda.nccl.version()
    except Exception as exc:  # a build without NCCL
        return f"unavailable ({type(exc).__name__})"
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def main() -> int:
    found, missing = {}, {}
    for name, why in NEEDS.items():
        try:
            found[name] = getattr(importlib.import_module(name), "__version__", "?")
        except Exception as exc:
            missing[name] = f"{why} ({type(exc).__name__}: {exc})"
    import torch
    import torchvision

    cuda = torch.cuda.is_available()
    info = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu_count": __import__("os").cpu_count(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "cuda_available": cuda,
        "nccl": _nccl_version() if cuda else None,
        "packages": found,
        "missing": missing,
    }
    if cuda:
        p = torch.cuda.get_device_properties(0)
        info.update(
            device=p.name,
            capability=f"{p.major}.{p.minor}",
            memory_gib=round(p.total_memory / 2**30, 1),
            multiprocessors=p.multi_processor_count,
            bf16=torch.cuda.is_bf16_supported(),
        )
    for name, why in missing.items():
        print(f"MISSING python package {name}: needed by {why}", file=sys.stderr)
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
