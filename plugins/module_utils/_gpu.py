# Copyright: Wyvern workbench team
# Apache-2.0
"""The project's one GPU rule: what an NVIDIA GPU on the host is, which driver it runs,
which driver a CUDA build needs, and why PyTorch may not see the GPU.

Standard library only, so that the ``gpu_info`` module, ``notebook_container`` and
scripts outside Ansible (the GPU check) share it.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Any

NVIDIA_VENDOR = "0x10de"
PCI_DEVICES = "/sys/bus/pci/devices"
DRIVER_VERSION_FILES = ("/sys/module/nvidia/version", "/proc/driver/nvidia/version")

# Minimum Linux driver per CUDA toolkit version (NVIDIA's CUDA release notes, table 3,
# "Toolkit Driver Version"). PyTorch wheels bundle the runtime, so the driver is the
# one thing the host must bring.
CUDA_MIN_DRIVER: dict[str, str] = {
    "11.8": "520.61.05",
    "12.0": "525.60.13",
    "12.1": "530.30.02",
    "12.2": "535.54.03",
    "12.3": "545.23.06",
    "12.4": "550.54.14",
    "12.5": "555.42.02",
    "12.6": "560.28.03",
    "12.8": "570.26",
    "12.9": "575.51.03",
    "13.0": "580.65.06",
}


# What PyTorch sees: run inside the notebook container as the notebook user, one JSON line.
PROBE_SCRIPT = r"""
import json, torch, torchvision
available = torch.cuda.is_available()
count = torch.cuda.device_count() if available else 0
print(json.dumps({
    "torch": torch.__version__,
    "torchvision": torchvision.__version__,
    "cuda": torch.version.cuda,
    "cuda_available": available,
    "device_count": count,
    "devices": [torch.cuda.get_device_name(i) for i in range(count)],
}))
"""


def nvidia_gpu_count(sysfs: str = PCI_DEVICES) -> int:
    """How many PCI devices have NVIDIA's vendor id (no packages, no driver needed)."""
    count = 0
    for vendor_file in glob.glob(os.path.join(sysfs, "*", "vendor")):
        try:
            with open(vendor_file, encoding="ascii") as handle:
                if handle.read().strip().lower() == NVIDIA_VENDOR:
                    count += 1
        except OSError:
            continue
    return count


def host_has_nvidia_gpu(sysfs: str = PCI_DEVICES) -> bool:
    return nvidia_gpu_count(sysfs) > 0


def host_driver_version(paths: tuple[str, ...] = DRIVER_VERSION_FILES) -> str | None:
    """The loaded NVIDIA kernel driver's version, or None when no driver is loaded."""
    for path in paths:
        try:
            with open(path, encoding="ascii") as handle:
                text = handle.read()
        except OSError:
            continue
        match = re.search(r"(\d+\.\d+(?:\.\d+)?)", text)
        if match:
            return match.group(1)
    return None


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def min_driver_for_cuda(cuda: str | None) -> str | None:
    """Minimum driver for a CUDA version (``13.0``); the nearest lower table entry."""
    if not cuda:
        return None
    wanted = version_tuple(cuda)[:2]
    best = None
    for entry in sorted(CUDA_MIN_DRIVER, key=version_tuple):
        if version_tuple(entry) <= wanted:
            best = entry
    return CUDA_MIN_DRIVER[best] if best else None


def resolve_auto(value: str, gpu_present: bool, when_present: str, when_absent: str) -> str:
    """``auto`` follows the host's GPU; any other value is the user's explicit choice."""
    value = str(value).strip().lower()
    if value != "auto":
        return value
    return when_present if gpu_present else when_absent


def gpu_facts(
    simulate: bool = False,
    sysfs: str = PCI_DEVICES,
    driver_files: tuple[str, ...] = DRIVER_VERSION_FILES,
) -> dict[str, Any]:
    """What every role and the health check know about the host's GPUs."""
    count = nvidia_gpu_count(sysfs)
    if simulate:
        count = max(count, 1)
    return {
        "present": count > 0,
        "count": count,
        "driver_version": host_driver_version(driver_files),
        "simulated": bool(simulate),
    }


def diagnose_gpu(
    expect_gpu: bool,
    probe: dict[str, Any],
    gpus: str,
    driver: str | None,
    runtimes: list[str],
) -> str:
    """One line on why the probe and the expectation disagree, and what to do."""
    if not expect_gpu:
        return (
            f"PyTorch sees {probe.get('device_count', 0)} CUDA device(s) but expect_gpu is false; "
            "set gpus: none to keep the container on the CPU, or expect_gpu: true"
        )
    cuda = probe.get("cuda")
    needed = min_driver_for_cuda(cuda)
    parts = [
        f"expected a GPU but torch.cuda.is_available() is false (torch {probe.get('torch')}, CUDA {cuda})"
    ]
    if gpus == "none":
        parts.append("the container was started with gpus: none; set gpus: all")
    if driver is None:
        parts.append(
            "no NVIDIA driver is loaded on the host; install it (role wyvern.workbench.nvidia_driver)"
        )
    elif needed and version_tuple(driver) < version_tuple(needed):
        parts.append(
            f"host driver {driver} is older than {needed}, the minimum for CUDA {cuda}; "
            "upgrade the driver (nvidia_driver_branch)"
        )
    elif needed:
        parts.append(f"host driver {driver} meets the minimum {needed} for CUDA {cuda}")
    if "nvidia" in runtimes:
        parts.append("Docker has the nvidia runtime")
    else:
        parts.append(
            "Docker has no nvidia runtime; install it (role wyvern.workbench.nvidia_container_toolkit)"
        )
    return "; ".join(parts)
