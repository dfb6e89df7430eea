"""Shared fixtures of the notebook_container unit tests: params, inspect data, a fake SDK."""

from __future__ import annotations

from typing import Any
from unittest import mock

from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_container import (
    manager,
    spec,
)
from docker.errors import NotFound

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
    env = dict(spec._env_list_to_dict(IMAGE_ATTRS["Config"]["Env"]))
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
            # On the host's network Docker publishes nothing.
            "PortBindings": {}
            if desired["network"] == spec.HOST_NETWORK
            else {"8888/tcp": [{"HostIp": host, "HostPort": port}]},
            "ExtraHosts": list(desired.get("extra_hosts") or []) or None,
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
    return spec.desired_spec(p, IMAGE_ID, p["token"], spec.resolve_gpus(p["gpus"], False))


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


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
) -> manager.NotebookContainer:
    clock = FakeClock()
    return manager.NotebookContainer(
        params(**over),
        check_mode,
        client=client,
        gpu_present=lambda: gpu,
        driver_version=lambda: None,
        clock=clock,
        sleep=clock.sleep,
        status=lambda u, t: 200,
    )
