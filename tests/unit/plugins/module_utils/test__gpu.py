"""The one GPU rule (module_utils/_gpu.py) over a fake sysfs tree and fake driver files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.wyvern.workbench.plugins.module_utils import _gpu

ROOT = Path(__file__).resolve().parents[4]


def _pci(tmp_path: Path, *vendors: str) -> str:
    for index, vendor in enumerate(vendors):
        device = tmp_path / f"0000:00:{index:02x}.0"
        device.mkdir()
        (device / "vendor").write_text(vendor + "\n")
    return str(tmp_path)


def test_counts_every_nvidia_device_and_nothing_else(tmp_path: Path) -> None:
    sysfs = _pci(tmp_path, "0x8086", "0x10de", "0x1d0f", "0x10DE")
    assert _gpu.nvidia_gpu_count(sysfs) == 2
    assert _gpu.host_has_nvidia_gpu(sysfs)


def test_no_pci_tree_means_no_gpu(tmp_path: Path) -> None:
    assert _gpu.nvidia_gpu_count(str(tmp_path / "absent")) == 0


def test_facts_of_a_cpu_host_and_a_simulated_gpu(tmp_path: Path) -> None:
    sysfs = _pci(tmp_path, "0x8086")
    none = (str(tmp_path / "no-driver"),)
    assert _gpu.gpu_facts(sysfs=sysfs, driver_files=none) == {
        "present": False,
        "count": 0,
        "driver_version": None,
        "simulated": False,
    }
    simulated = _gpu.gpu_facts(simulate=True, sysfs=sysfs, driver_files=none)
    assert simulated["present"] and simulated["count"] == 1 and simulated["simulated"]


def test_facts_read_the_loaded_driver(tmp_path: Path) -> None:
    (tmp_path / "pci").mkdir()
    sysfs = _pci(tmp_path / "pci", "0x10de")
    version = tmp_path / "version"
    version.write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  Tue Sep 30 2025\n"
    )
    facts = _gpu.gpu_facts(sysfs=sysfs, driver_files=(str(version),))
    assert facts["present"] and facts["count"] == 1
    assert facts["driver_version"] == "580.95.05"


@pytest.mark.parametrize(
    ("value", "present", "expected"),
    [("auto", True, "all"), ("auto", False, "none"), ("AUTO", True, "all"), ("2", False, "2")],
)
def test_auto_follows_the_host_and_anything_else_is_kept(
    value: str, present: bool, expected: str
) -> None:
    assert _gpu.resolve_auto(value, present, "all", "none") == expected


def test_gpu_info_module_reports_this_machine_as_the_rule_sees_it(tmp_path: Path) -> None:
    """The module as Ansible runs it, against this machine's real /sys."""
    env = {
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
        "HOME": str(tmp_path),
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
    }
    for simulate in (False, True):
        out = subprocess.run(
            [
                str(Path(sys.executable).parent / "ansible"),
                "localhost",
                "-m",
                "wyvern.workbench.gpu_info",
                "-a",
                f"simulate={simulate}",
                "-o",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        result = json.loads(out.split("=>", 1)[1])
        assert result["changed"] is False
        assert result["gpu"] == _gpu.gpu_facts(simulate=simulate)
