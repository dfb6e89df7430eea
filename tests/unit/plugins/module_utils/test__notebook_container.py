"""Unit tests of the notebook_container logic; the Docker SDK is mocked at its boundary."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from ansible_collections.wyvern.workbench.plugins.module_utils import _notebook_container as nc
from docker.errors import APIError, ImageNotFound, NotFound

IMAGE_ID = "sha256:" + "a" * 64
IMAGE_ATTRS = {
    "Id": IMAGE_ID,
    "Config": {
        "Env": ["PATH=/opt/venv/bin:/usr/bin", "LANG=C.UTF-8"],
        "Labels": {"org.opencontainers.image.revision": "abc"},
    },
}


def params(**over: Any) -> dict[str, Any]:
    base = {
        "name": "wyvern-test-module-unit",
        "image": "wyvern/notebook:0123",
        "state": "started",
        "gpus": "auto",
        "bind_address": "127.0.0.1",
        "port": 18888,
        "token": "t" * 43,
        "token_file": "/nonexistent/token",
        "volumes": ["/srv/w:/workspace/workload:ro", "/srv/o:/workspace/outputs"],
        "shm_size": "2g",
        "env": {"EXTRA": "1"},
        "user": "1000:1000",
        "restart_policy": "unless-stopped",
        "labels": {"io.wyvern.workbench.name": "unit"},
        "timeout": 10,
        "interval": 0.5,
        "expect_gpu": "auto",
        "docker_host": None,
        "allow_public_bind": False,
        "port_file": None,
    }
    base.update(over)
    return base


def inspect_of(desired: dict[str, Any], running: bool = True) -> dict[str, Any]:
    """What `docker inspect` says about a container created from `desired` (image values merged)."""
    env = dict(nc._env_list_to_dict(IMAGE_ATTRS["Config"]["Env"]))
    env.update(desired["env"])
    labels = dict(IMAGE_ATTRS["Config"]["Labels"])
    labels.update(desired["labels"])
    host, _, port = desired["ports"].rpartition(":")
    requests = []
    if desired["gpus"] != "none":
        count = -1 if desired["gpus"] == "all" else int(desired["gpus"])
        requests = [
            {
                "Driver": "",
                "Count": count,
                "DeviceIDs": None,
                "Capabilities": [["gpu"]],
                "Options": {},
            }
        ]
    return {
        "Id": "c" * 64,
        "RestartCount": 0,
        "Image": desired["image"],
        "State": {"Running": running, "Status": "running" if running else "exited"},
        "Config": {
            "Env": [f"{k}={v}" for k, v in env.items()],
            "Labels": labels,
            "User": desired["user"],
        },
        "HostConfig": {
            "PortBindings": {"8888/tcp": [{"HostIp": host, "HostPort": port}]},
            "DeviceRequests": requests or None,
            "Binds": [m.removesuffix(":rw") if m.endswith(":rw") else m for m in desired["mounts"]],
            "ShmSize": desired["shm_size"],
            "RestartPolicy": {"Name": desired["restart_policy"], "MaximumRetryCount": 0},
            "Init": desired["init"],
            "NetworkMode": desired["network"],
        },
    }


def desired(**over: Any) -> dict[str, Any]:
    p = params(**over)
    return nc.desired_spec(p, IMAGE_ID, p["token"], nc.resolve_gpus(p["gpus"], False))


# ------------------------------------------------------------------ planning and drift


def test_matching_container_needs_no_action() -> None:
    want = desired()
    result = nc.plan("started", inspect_of(want), want, IMAGE_ATTRS)
    assert result.actions == []
    assert result.drift == []
    assert not result.changed


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"image": "sha256:" + "b" * 64}, "image"),
        ({"env": {"EXTRA": "2"}}, "env"),
        ({"ports": "127.0.0.1:9999"}, "ports"),
        ({"gpus": "all"}, "gpus"),
        ({"mounts": ["/elsewhere:/workspace/outputs:rw"]}, "mounts"),
        ({"labels": {"io.wyvern.workbench.name": "other"}}, "labels"),
        ({"shm_size": 64 * 1024 * 1024}, "shm_size"),
        ({"restart_policy": "no"}, "restart_policy"),
        ({"init": False}, "init"),
        ({"network": "bridge"}, "network"),
    ],
)
def test_drift_recreates_and_names_what_changed(change: dict[str, Any], field: str) -> None:
    want = desired()
    have = inspect_of({**want, **change})
    result = nc.plan("started", have, want, IMAGE_ATTRS)
    assert result.actions == ["remove", "create", "start"]
    assert result.drift == [field]
    assert result.before[field] != result.after[field]


def test_changed_token_is_drift_but_never_shown() -> None:
    want = desired()
    have = inspect_of(desired(token="old-token-value"))
    result = nc.plan("started", have, want, IMAGE_ATTRS)
    assert result.drift == ["labels"]  # the token's digest label
    shown = repr(result.before) + repr(result.after)
    assert "old-token-value" not in shown and "t" * 43 not in shown


def test_a_container_with_the_token_in_its_environment_is_recreated_and_masked() -> None:
    want = desired()
    have = inspect_of(want)
    have["Config"]["Env"].append("JUPYTER_TOKEN=old-token-value")
    result = nc.plan("started", have, want, IMAGE_ATTRS)
    assert result.drift == ["env"]
    assert "old-token-value" not in repr(result.before)
    assert result.before["env"]["JUPYTER_TOKEN"] == nc.HIDDEN


def test_values_the_image_sets_are_not_drift() -> None:
    want = desired(env={"LANG": "C.UTF-8"})  # same as the image's own value
    result = nc.plan("started", inspect_of(want), want, IMAGE_ATTRS)
    assert result.actions == []


def test_exited_container_is_started_again() -> None:
    want = desired()
    result = nc.plan("started", inspect_of(want, running=False), want, IMAGE_ATTRS)
    assert result.actions == ["start"]
    assert result.before["state"] == "stopped"


def test_missing_container_is_created() -> None:
    want = desired()
    assert nc.plan("started", None, want, IMAGE_ATTRS).actions == ["create", "start"]


@pytest.mark.parametrize(
    ("state", "running", "actions"),
    [
        ("absent", True, ["remove"]),
        ("absent", None, []),
        ("stopped", True, ["stop"]),
        ("stopped", False, []),
    ],
)
def test_absent_and_stopped(state: str, running: bool | None, actions: list[str]) -> None:
    container = None if running is None else inspect_of(desired(), running=running)
    assert nc.plan(state, container, None, None).actions == actions


def test_gpu_resolution() -> None:
    assert nc.resolve_gpus("auto", True) == "all"
    assert nc.resolve_gpus("auto", False) == "none"
    assert nc.resolve_gpus("2", False) == "2"
    assert nc.resolve_gpus("0", True) == "none"
    with pytest.raises(nc.NotebookError, match="gpus must be auto, all, none or a count"):
        nc.resolve_gpus("many", True)
    (request,) = nc.device_requests("all")
    assert request["Count"] == -1 and request["Capabilities"] == [["gpu"]]
    assert nc.device_requests("none") == []


def test_bad_volume_and_size_fail_with_the_option_name() -> None:
    with pytest.raises(nc.NotebookError, match="fix volumes"):
        nc.parse_volume("relative:/x")
    with pytest.raises(nc.NotebookError, match="fix shm_size"):
        nc.parse_size("lots")
    assert nc.parse_size("512m") == 512 * 1024**2


# ------------------------------------------------------------------ token


def test_token_created_once_with_0600_and_kept(tmp_path: Path) -> None:
    token_file = tmp_path / "sub" / "token"
    token, changed = nc.ensure_token(None, str(token_file), check_mode=False)
    assert changed and len(token) >= 43  # 32 random bytes, URL-safe base64
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    again, changed_again = nc.ensure_token(None, str(token_file), check_mode=False)
    assert (again, changed_again) == (token, False)


def test_token_check_mode_writes_nothing(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    _, changed = nc.ensure_token(None, str(token_file), check_mode=True)
    assert changed and not token_file.exists()


def test_given_token_replaces_the_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    nc.ensure_token(None, str(token_file), check_mode=False)
    token, changed = nc.ensure_token("given-token", str(token_file), check_mode=False)
    assert (token, changed) == ("given-token", True)
    assert token_file.read_text().strip() == "given-token"


# ------------------------------------------------------------------ health, with a fake clock


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_health_waits_until_jupyter_answers() -> None:
    clock = FakeClock()
    answers = iter([None, None, 503, 200])
    waited = nc.wait_healthy(
        "http://127.0.0.1:1",
        "tok",
        lambda: nc.ContainerState("running"),
        10,
        0.5,
        clock,
        clock.sleep,
        lambda u, t: next(answers),
    )
    assert waited == pytest.approx(1.5)


def test_health_times_out_with_the_last_status() -> None:
    clock = FakeClock()
    with pytest.raises(nc.NotebookError, match=r"did not answer within 3s \(last status None\)"):
        nc.wait_healthy(
            "http://x",
            "tok",
            lambda: nc.ContainerState("running"),
            3,
            0.5,
            clock,
            clock.sleep,
            lambda u, t: None,
        )
    assert clock.now == pytest.approx(103.0)


def test_health_stops_when_the_container_exits() -> None:
    clock = FakeClock()
    states = iter([nc.ContainerState("running"), nc.ContainerState("exited", exit_code=3)])
    with pytest.raises(nc.NotebookError, match="exited during start"):
        nc.wait_healthy(
            "http://x", "t", lambda: next(states), 60, 0.5, clock, clock.sleep, lambda u, t: None
        )
    assert clock.now == pytest.approx(100.5)


def test_health_reports_a_refused_token() -> None:
    clock = FakeClock()
    with pytest.raises(nc.NotebookError, match="refused the token"):
        nc.wait_healthy(
            "http://x",
            "t",
            lambda: nc.ContainerState("running"),
            60,
            0.5,
            clock,
            clock.sleep,
            lambda u, t: 403,
        )


# ------------------------------------------------------------------ GPU rule and driver table


def test_gpu_rule_reads_pci_vendor_ids(tmp_path: Path) -> None:
    for name, vendor in (("0000:00:01.0", "0x8086"), ("0000:00:1e.0", "0x10de")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "vendor").write_text(vendor + "\n")
    assert nc.host_has_nvidia_gpu(str(tmp_path))
    (tmp_path / "0000:00:1e.0" / "vendor").write_text("0x1d0f\n")
    assert not nc.host_has_nvidia_gpu(str(tmp_path))


def test_driver_version_from_sysfs(tmp_path: Path) -> None:
    version = tmp_path / "version"
    version.write_text("580.95.05\n")
    assert nc.host_driver_version((str(tmp_path / "missing"), str(version))) == "580.95.05"
    assert nc.host_driver_version((str(tmp_path / "missing"),)) is None


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
    assert nc.min_driver_for_cuda(cuda) == driver


def test_diagnosis_names_an_old_driver_and_the_missing_runtime() -> None:
    probe = {"torch": "2.14.1+cu130", "cuda": "13.0", "cuda_available": False, "device_count": 0}
    text = nc.diagnose_gpu(True, probe, "all", "535.104.05", ["runc"])
    assert "host driver 535.104.05 is older than 580.65.06, the minimum for CUDA 13.0" in text
    assert "Docker has no nvidia runtime" in text


def test_diagnosis_without_a_driver_or_gpus() -> None:
    probe = {"torch": "2.14.1", "cuda": "13.0", "cuda_available": False}
    text = nc.diagnose_gpu(True, probe, "none", None, ["nvidia", "runc"])
    assert "gpus: none" in text and "no NVIDIA driver is loaded" in text
    assert "Docker has the nvidia runtime" in text


# ------------------------------------------------------------------ the driver class, SDK mocked


def fake_client(container_attrs: dict[str, Any] | None) -> mock.MagicMock:
    client = mock.MagicMock()
    image = mock.MagicMock(id=IMAGE_ID, attrs=IMAGE_ATTRS)
    client.images.get.return_value = image
    client.networks.get.side_effect = NotFound("no such network")
    client.containers.list.return_value = []
    if container_attrs is None:
        client.containers.get.side_effect = NotFound("no such container")
    else:
        client.containers.get.return_value = mock.MagicMock(
            id=container_attrs["Id"], attrs=container_attrs
        )
    created = mock.MagicMock(id="d" * 64, status="running", attrs={"RestartCount": 0})
    created.exec_run.return_value = (
        0,
        b'{"torch": "2.14.1+cu130", "torchvision": "0.29.1+cu130", "cuda": "13.0", '
        b'"cuda_available": false, "device_count": 0, "devices": []}\n',
    )
    created.logs.return_value = b"line 1\nline 2\n"
    client.containers.create.return_value = created
    client.info.return_value = {"Runtimes": {"runc": {}}}
    return client


def runner(
    client: mock.MagicMock, check_mode: bool = False, gpu: bool = False, **over: Any
) -> nc.NotebookContainer:
    clock = FakeClock()
    return nc.NotebookContainer(
        params(**over),
        check_mode,
        client=client,
        gpu_present=lambda: gpu,
        driver_version=lambda: None,
        clock=clock,
        sleep=clock.sleep,
        status=lambda u, t: 200,
    )


def test_check_mode_plans_without_side_effects(tmp_path: Path) -> None:
    client = fake_client(None)
    result = runner(client, check_mode=True, token_file=str(tmp_path / "token")).run()
    assert result.changed and result.actions == ["create-network", "create", "start"]
    client.containers.create.assert_not_called()
    client.networks.create.assert_not_called()
    assert not (tmp_path / "token").exists() and not (tmp_path / "token.d").exists()


def test_start_creates_runs_and_probes(tmp_path: Path) -> None:
    client = fake_client(None)
    result = runner(client, token_file=str(tmp_path / "token"), gpus="all").run()
    kwargs = client.containers.create.call_args.kwargs
    assert kwargs["ports"] == {"8888/tcp": ("127.0.0.1", 18888)}
    assert kwargs["environment"]["WORKBENCH_IMAGE_ID"] == IMAGE_ID
    assert kwargs["environment"]["JUPYTER_TOKEN_FILE"] == "/run/secrets/jupyter_token"
    assert "JUPYTER_TOKEN" not in kwargs["environment"]
    assert kwargs["init"] is True and kwargs["network"] == "wyvern-test-module-unit-net"
    assert kwargs["device_requests"][0]["Count"] == -1
    assert result.url == "http://127.0.0.1:18888"
    assert result.probe["torch"] == "2.14.1+cu130" and result.probe["cuda_available"] is False
    assert result.seconds_to_healthy == 0.0
    assert "t" * 43 not in repr(result.as_dict())  # the token never reaches the result


def test_port_conflict_is_one_clear_line(tmp_path: Path) -> None:
    client = fake_client(None)
    created = client.containers.create.return_value
    created.start.side_effect = APIError(
        "500",
        explanation="driver failed: Bind for 127.0.0.1:18888 failed: port is already allocated",
    )
    with pytest.raises(nc.NotebookError, match=re.escape("port 127.0.0.1:18888 is already taken")):
        runner(client, token_file=str(tmp_path / "token")).run()
    created.remove.assert_called_once_with(force=True)


def test_missing_image_says_how_to_get_it(tmp_path: Path) -> None:
    client = fake_client(None)
    client.images.get.side_effect = ImageNotFound("nope")
    with pytest.raises(nc.NotebookError, match="is not on this host; build it first"):
        runner(client, token_file=str(tmp_path / "token")).run()


def test_expected_gpu_missing_fails_with_diagnosis_and_logs(tmp_path: Path) -> None:
    client = fake_client(None)
    with pytest.raises(nc.NotebookError) as failure:
        runner(
            client, gpu=True, token_file=str(tmp_path / "token"), expect_gpu="true", gpus="all"
        ).run()
    assert "torch.cuda.is_available() is false" in str(failure.value)
    assert "no nvidia runtime" in str(failure.value)
    assert failure.value.logs == ["line 1", "line 2"]
    assert failure.value.extra["probe"]["cuda"] == "13.0"


def test_unreachable_daemon_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(
        nc.NotebookError,
        match=re.escape("cannot reach the Docker daemon at unix:///nonexistent/docker.sock"),
    ):
        nc.NotebookContainer(params(), False).connect()
