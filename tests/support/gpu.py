"""What this machine's tests must expect about GPUs, decided the way the product decides.

The product has one GPU rule (an NVIDIA PCI vendor id, 0x10de, under /sys/bus/pci), used
by every role and by the notebook's health check; tests import that very function, so
they expect the GPU path exactly where the product takes it.
"""

from __future__ import annotations

import sys
from pathlib import Path

COLLECTIONS = Path(__file__).resolve().parents[2] / "collections"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

from ansible_collections.wyvern.workbench.plugins.module_utils import _gpu  # noqa: E402


def host_has_nvidia_gpu() -> bool:
    return _gpu.host_has_nvidia_gpu()


HAS_GPU = host_has_nvidia_gpu()
