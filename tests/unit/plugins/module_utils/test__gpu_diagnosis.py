"""Every branch of the driver/CUDA diagnosis the notebook health check gives a user.

When PyTorch's view of CUDA and the expectation disagree, the module fails with one line
that says why and what to do: expecting no GPU but seeing one, the container started
without GPUs, no driver loaded, a driver too old for the image's CUDA, a driver that is
new enough, and whether Docker has the nvidia runtime. Each case below pins what the
user reads, and what they must not read (advice that does not apply).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from ansible_collections.wyvern.workbench.plugins.module_utils import _gpu
from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_container import (
    common,
    manager,
)
from docker.errors import DockerException

PROBE = {
    "torch": "2.14.1+cu130",
    "torchvision": "0.29.1",
    "cuda": "13.0",
    "cuda_available": False,
    "device_count": 0,
    "devices": [],
}
RUNTIMES_OK = ["io.containerd.runc.v2", "nvidia", "runc"]
RUNTIMES_NONE = ["io.containerd.runc.v2", "runc"]


def diagnose(**over: Any) -> str:
    args: dict[str, Any] = {
        "expect_gpu": True,
        "probe": PROBE,
        "gpus": "all",
        "driver": "580.65.06",
        "runtimes": RUNTIMES_OK,
    }
    args.update(over)
    return _gpu.diagnose_gpu(**args)


# ------------------------------------------------------------------ expecting no GPU


def test_a_gpu_seen_where_none_was_expected() -> None:
    probe = {**PROBE, "cuda_available": True, "device_count": 2, "devices": ["H100", "H100"]}
    text = diagnose(expect_gpu=False, probe=probe)
    assert text.startswith("PyTorch sees 2 CUDA device(s) but expect_gpu is false")
    assert "set gpus: none" in text and "expect_gpu: true" in text
    # None of the missing-GPU advice applies.
    assert "driver" not in text and "runtime" not in text


def test_a_probe_without_a_device_count_counts_zero() -> None:
    assert "PyTorch sees 0 CUDA device(s)" in diagnose(expect_gpu=False, probe={"torch": "2.14.1"})


# ------------------------------------------------------------------ expecting a GPU


def test_the_headline_names_torch_and_its_cuda() -> None:
    text = diagnose()
    assert text.startswith(
        "expected a GPU but torch.cuda.is_available() is false (torch 2.14.1+cu130, CUDA 13.0)"
    )


@pytest.mark.parametrize(("gpus", "named"), [("none", True), ("all", False), ("2", False)])
def test_a_container_started_without_gpus_is_named(gpus: str, named: bool) -> None:
    text = diagnose(gpus=gpus)
    assert ("the container was started with gpus: none; set gpus: all" in text) is named


def test_no_driver_loaded_points_at_the_driver_role() -> None:
    text = diagnose(driver=None)
    assert (
        "no NVIDIA driver is loaded on the host; install it (role wyvern.workbench.nvidia_driver)"
        in text
    )
    assert "older than" not in text and "meets the minimum" not in text


@pytest.mark.parametrize("driver", ["535.104.05", "580.65.05", "575.51.03", "99.1"])
def test_a_driver_older_than_cuda_needs_is_named_with_the_minimum(driver: str) -> None:
    text = diagnose(driver=driver)
    assert (
        f"host driver {driver} is older than 580.65.06, the minimum for CUDA 13.0; "
        "upgrade the driver (nvidia_driver_branch)"
    ) in text
    assert "no NVIDIA driver" not in text


@pytest.mark.parametrize("driver", ["580.65.06", "580.82.07", "1000.1"])
def test_a_driver_new_enough_is_said_to_be_fine(driver: str) -> None:
    # Compared as numbers: "1000.1" is newer than "580.65.06" though it sorts lower as text.
    text = diagnose(driver=driver)
    assert f"host driver {driver} meets the minimum 580.65.06 for CUDA 13.0" in text
    assert "older than" not in text


@pytest.mark.parametrize("cuda", [None, "", "10.2"])
def test_no_driver_verdict_without_a_known_cuda_minimum(cuda: str | None) -> None:
    # A CPU-only torch (cuda None) or a CUDA older than the table: nothing to compare.
    text = diagnose(probe={**PROBE, "cuda": cuda}, driver="470.1")
    assert "older than" not in text and "meets the minimum" not in text
    assert "no NVIDIA driver" not in text


def test_no_driver_is_still_named_without_a_cuda_minimum() -> None:
    text = diagnose(probe={**PROBE, "cuda": None}, driver=None)
    assert "no NVIDIA driver is loaded on the host" in text


@pytest.mark.parametrize(
    ("cuda", "minimum"), [("12.4", "550.54.14"), ("12.7", "560.28.03"), ("13.2", "580.65.06")]
)
def test_the_minimum_follows_the_image_cuda(cuda: str, minimum: str) -> None:
    # An unlisted CUDA version takes the nearest lower entry of NVIDIA's table.
    text = diagnose(probe={**PROBE, "cuda": cuda}, driver="520.61.05")
    assert f"older than {minimum}, the minimum for CUDA {cuda}" in text


@pytest.mark.parametrize(
    ("runtimes", "expected", "absent"),
    [
        (RUNTIMES_OK, "Docker has the nvidia runtime", "Docker has no nvidia runtime"),
        (
            RUNTIMES_NONE,
            "Docker has no nvidia runtime; install it (role wyvern.workbench.nvidia_container_toolkit)",
            "Docker has the nvidia runtime",
        ),
        ([], "Docker has no nvidia runtime", "Docker has the nvidia runtime"),
    ],
)
def test_the_nvidia_runtime_is_reported(runtimes: list[str], expected: str, absent: str) -> None:
    text = diagnose(runtimes=runtimes)
    assert expected in text and absent not in text


def test_everything_wrong_at_once_is_one_line_listing_each_fix() -> None:
    text = diagnose(gpus="none", driver="535.104.05", runtimes=RUNTIMES_NONE)
    assert "\n" not in text
    parts = text.split("; ")
    assert parts[0].startswith("expected a GPU")
    for fix in ("set gpus: all", "upgrade the driver", "nvidia_container_toolkit"):
        assert sum(fix in part for part in parts) == 1, (fix, parts)


# ------------------------------------------------------------------ what the diagnosis is fed


def test_loaded_driver_version_is_read_from_sysfs_first(tmp_path: Path) -> None:
    sysfs = tmp_path / "version"
    proc = tmp_path / "proc_version"
    sysfs.write_text("580.82.07\n")
    proc.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  575.51.03  Tue May 6\n")
    assert _gpu.host_driver_version((str(sysfs), str(proc))) == "580.82.07"


def test_loaded_driver_version_from_proc_skips_the_architecture(tmp_path: Path) -> None:
    proc = tmp_path / "proc_version"
    proc.write_text(
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build\n"
        "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
    )
    assert _gpu.host_driver_version((str(tmp_path / "missing"), str(proc))) == "580.65.06"


def test_no_driver_files_means_no_driver(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("no version here\n")
    assert _gpu.host_driver_version((str(tmp_path / "missing"), str(empty))) is None


def _container_with(client: mock.MagicMock, **params: Any) -> manager.NotebookContainer:
    base = {"expect_gpu": "auto", "user": "1000:1000"}
    base.update(params)
    return manager.NotebookContainer(
        base,
        check_mode=False,
        client=client,
        gpu_present=lambda: True,
        driver_version=lambda: "535.104.05",
    )


def _result(cuda_available: bool, gpus: str = "all") -> manager.Result:
    return manager.Result(
        changed=True,
        diff={},
        actions=[],
        probe={**PROBE, "cuda_available": cuda_available},
        gpus=gpus,
    )


def test_health_check_feeds_the_host_driver_and_docker_runtimes() -> None:
    client = mock.MagicMock()
    client.info.return_value = {"Runtimes": {"runc": {}}}
    container = mock.MagicMock()
    container.logs.return_value = b"[I ServerApp] Jupyter Server is running\n"
    with pytest.raises(common.NotebookError) as failure:
        _container_with(client).compare_gpu(container, _result(cuda_available=False))
    message = str(failure.value)
    assert "host driver 535.104.05 is older than 580.65.06" in message
    assert "Docker has no nvidia runtime" in message
    assert failure.value.logs == ["[I ServerApp] Jupyter Server is running"]


def test_health_check_with_an_unanswering_daemon_reports_no_runtime() -> None:
    client = mock.MagicMock()
    client.info.side_effect = DockerException("daemon went away")
    with pytest.raises(common.NotebookError, match="Docker has no nvidia runtime"):
        _container_with(client).compare_gpu(mock.MagicMock(), _result(cuda_available=False))


@pytest.mark.parametrize(
    ("expect_gpu", "gpu_present", "cuda_available", "fails"),
    [
        ("auto", True, True, False),
        ("auto", False, False, False),
        ("auto", True, False, True),
        ("auto", False, True, True),
        ("true", False, False, True),
        ("false", True, True, True),
        ("false", True, False, False),
    ],
)
def test_expectation_follows_expect_gpu_or_the_host(
    expect_gpu: str, gpu_present: bool, cuda_available: bool, fails: bool
) -> None:
    client = mock.MagicMock()
    client.info.return_value = {"Runtimes": {"nvidia": {}, "runc": {}}}
    box = _container_with(client, expect_gpu=expect_gpu)
    box.gpu_present = lambda: gpu_present
    if fails:
        with pytest.raises(common.NotebookError):
            box.compare_gpu(mock.MagicMock(), _result(cuda_available))
    else:
        box.compare_gpu(mock.MagicMock(), _result(cuda_available))
