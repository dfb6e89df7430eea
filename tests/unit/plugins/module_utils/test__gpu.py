"""The one GPU rule (module_utils/_gpu.py) over a fake sysfs tree and fake driver files."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.wyvern.workbench.plugins.module_utils import _gpu

from tests.support.adhoc import run_module

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
    for simulate in (False, True):
        result = run_module("wyvern.workbench.gpu_info", f"simulate={simulate}", tmp_path)
        assert result["changed"] is False
        assert result["gpu"] == _gpu.gpu_facts(simulate=simulate)
        # The host fact later roles of the run reuse instead of asking again.
        assert result["ansible_facts"]["wyvern_gpu"] == result["gpu"]


# Moved from the notebook_container tests (they reached these through a re-export).


def test_gpu_rule_reads_pci_vendor_ids(tmp_path: Path) -> None:
    for name, vendor in (("0000:00:01.0", "0x8086"), ("0000:00:1e.0", "0x10de")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "vendor").write_text(vendor + "\n")
    assert _gpu.host_has_nvidia_gpu(str(tmp_path))
    (tmp_path / "0000:00:1e.0" / "vendor").write_text("0x1d0f\n")
    assert not _gpu.host_has_nvidia_gpu(str(tmp_path))


def test_driver_version_from_sysfs(tmp_path: Path) -> None:
    version = tmp_path / "version"
    version.write_text("580.95.05\n")
    assert _gpu.host_driver_version((str(tmp_path / "missing"), str(version))) == "580.95.05"
    assert _gpu.host_driver_version((str(tmp_path / "missing"),)) is None


@pytest.mark.parametrize(
    ("cuda", "driver"),
    [
        ("13.0", "580.65.06"),
        ("12.8", "570.26"),
        ("12.7", "560.28.03"),
        ("12.1", "530.30.02"),
        ("10.2", None),
    ],
)
def test_minimum_driver_table(cuda: str, driver: str | None) -> None:
    assert _gpu.min_driver_for_cuda(cuda) == driver


def test_diagnosis_names_an_old_driver_and_the_missing_runtime() -> None:
    probe = {"torch": "2.14.1+cu130", "cuda": "13.0", "cuda_available": False, "device_count": 0}
    text = _gpu.diagnose_gpu(True, probe, "all", "535.104.05", ["runc"])
    assert "host driver 535.104.05 is older than 580.65.06, the minimum for CUDA 13.0" in text
    assert "Docker has no nvidia runtime" in text


def test_diagnosis_without_a_driver_or_gpus() -> None:
    probe = {"torch": "2.14.1", "cuda": "13.0", "cuda_available": False}
    text = _gpu.diagnose_gpu(True, probe, "none", None, ["nvidia", "runc"])
    assert "gpus: none" in text and "no NVIDIA driver is loaded" in text
    assert "Docker has the nvidia runtime" in text
