"""The notebook_container module against the real Docker engine and the real notebook image.

The ladder: check mode, start, idempotent check and rerun, drift, health, GPU
expectation, port conflict, a crashing container, absent.
"""

from __future__ import annotations

import contextlib
import io
import secrets
import socket
import stat
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.support.gpu import HAS_GPU
from tests.support.ports import reserved_port

from .conftest import PREFIX


@pytest.fixture
def spec(notebook_image: str, container_name: str, tmp_path: Path) -> Iterator[dict]:
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    outputs.chmod(0o777)
    with reserved_port() as port:  # held until the test ends; only Docker binds it
        yield {
            "name": container_name,
            "image": notebook_image,
            "port": port,
            "token_file": str(tmp_path / "token"),
            "volumes": [f"{outputs}:/workspace/outputs:rw"],
            "labels": {"io.wyvern.workbench.test": "module"},
            "timeout": 120,
        }


@contextlib.contextmanager
def own_image(docker_client, dockerfile: str) -> Iterator[str]:
    """A small image of this test run's own, removed afterwards."""
    tag = f"{PREFIX}image:{secrets.token_hex(4)}"
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    try:
        yield tag
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
            docker_client.images.remove(tag, force=True)


def jupyter(url: str, token: str | None) -> int:
    request = urllib.request.Request(f"{url}/api/status")
    if token:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_ladder_check_start_idempotent_drift_absent(run_module, spec: dict, docker_client) -> None:
    planned = run_module(spec, check=True)
    assert planned["changed"] is True
    assert planned["actions"] == ["create-network", "create", "start"]
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(spec["name"])

    started = run_module(spec)
    assert started["changed"] is True, started.get("msg")
    token = Path(spec["token_file"]).read_text().strip()
    assert len(token) >= 43 and stat.S_IMODE(Path(spec["token_file"]).stat().st_mode) == 0o600
    assert started["url"] == f"http://127.0.0.1:{spec['port']}"
    assert jupyter(started["url"], token) == 200
    assert jupyter(started["url"], None) == 403
    assert started["probe"]["torch"].startswith("2.14.1")
    assert started["probe"]["torchvision"].startswith("0.29.1")
    # gpus and expect_gpu are auto: CUDA exactly where the product's GPU rule finds a GPU.
    assert started["probe"]["cuda_available"] is HAS_GPU
    assert started["seconds_to_healthy"] > 0
    container = docker_client.containers.get(spec["name"])
    assert container.attrs["Config"]["User"] == "1000:1000"
    ports = container.attrs["HostConfig"]["PortBindings"]["8888/tcp"]
    assert ports == [{"HostIp": "127.0.0.1", "HostPort": str(spec["port"])}]
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    assert env["WORKBENCH_IMAGE_ID"] == started["image_id"]
    assert token not in repr(started)

    assert run_module(spec, check=True)["changed"] is False
    again = run_module(spec)
    assert again["changed"] is False and again["container_id"] == started["container_id"]
    assert Path(spec["token_file"]).read_text().strip() == token  # the token is kept

    drifted = run_module({**spec, "env": {"WORKBENCH_EXTRA": "1"}})
    assert drifted["changed"] is True and drifted["drift"] == ["env"]
    assert drifted["container_id"] != started["container_id"]
    assert drifted["diff"]["after"]["env"]["WORKBENCH_EXTRA"] == "1"

    docker_client.containers.get(spec["name"]).stop(timeout=5)
    restarted = run_module({**spec, "env": {"WORKBENCH_EXTRA": "1"}})
    assert restarted["changed"] is True and restarted["actions"] == ["start"]
    assert restarted["container_id"] == drifted["container_id"]

    removed = run_module({"name": spec["name"], "state": "absent"})
    assert removed["changed"] is True and removed["actions"] == ["remove", "remove-network"]
    assert run_module({"name": spec["name"], "state": "absent"})["changed"] is False
    assert not [c for c in docker_client.containers.list(all=True) if c.name == spec["name"]]


def test_a_wrong_gpu_expectation_fails_with_a_diagnosis(run_module, spec: dict) -> None:
    if HAS_GPU:
        failed = run_module({**spec, "expect_gpu": "false"})
        assert failed.get("failed") is True
        assert "CUDA device(s) but expect_gpu is false" in failed["msg"]
    else:
        failed = run_module({**spec, "expect_gpu": "true"})
        assert failed.get("failed") is True
        assert "expected a GPU but torch.cuda.is_available() is false" in failed["msg"]
        assert "CUDA 13.0" in failed["msg"]
        assert "no NVIDIA driver is loaded on the host" in failed["msg"]
        assert "nvidia runtime" in failed["msg"]
    assert any("ServerApp" in line for line in failed["logs"])


def test_port_already_taken(run_module, spec: dict) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", spec["port"]))
        holder.listen()
        failed = run_module(spec)
    assert failed.get("failed") is True
    assert f"port 127.0.0.1:{spec['port']} is already taken" in failed["msg"]


def test_crashing_container_returns_its_logs(
    run_module, spec: dict, docker_client, debian_base_image: str
) -> None:
    dockerfile = (
        f'FROM {debian_base_image}\nCMD ["sh", "-c", "echo notebook-crash-marker; exit 3"]\n'
    )
    with own_image(docker_client, dockerfile) as crash_image:
        failed = run_module({**spec, "image": crash_image, "restart_policy": "no", "user": "1000"})
    assert failed.get("failed") is True
    assert "exited during start" in failed["msg"]
    assert "notebook-crash-marker" in failed["logs"]


def test_missing_image_and_root_user_fail_early(run_module, spec: dict) -> None:
    missing = run_module({**spec, "image": f"{PREFIX}does-not-exist:0"})
    assert "is not on this host; build it first" in missing["msg"]
    root = run_module({**spec, "user": "root"})
    assert "is root; run the notebook as a non-root user" in root["msg"]


def test_drift_in_each_setting_is_seen_in_docker_inspect_and_repaired(
    run_module, spec: dict, docker_client, notebook_image: str, tmp_path: Path
) -> None:
    """A container that differs from the spec in image, port, mounts, shm size or restart
    policy, as the real daemon reports it, is re-created with the spec's value."""
    started = run_module(spec)
    assert started["changed"] is True, started.get("msg")
    data = tmp_path / "data"
    data.mkdir()

    def inspect() -> dict:
        return docker_client.containers.get(spec["name"]).attrs

    with (
        reserved_port() as other_port,
        own_image(docker_client, f"FROM {notebook_image}\nLABEL io.wyvern.test=drift\n") as other,
    ):
        other_id = docker_client.images.get(other).id
        changes = [
            ("image", {"image": other}, lambda a: a["Image"] == other_id),
            (
                "ports",
                {"port": other_port},
                lambda a: (
                    a["HostConfig"]["PortBindings"]["8888/tcp"]
                    == [{"HostIp": "127.0.0.1", "HostPort": str(other_port)}]
                ),
            ),
            (
                "mounts",
                {"volumes": [*spec["volumes"], f"{data}:/workspace/data:ro"]},
                lambda a: f"{data}:/workspace/data:ro" in a["HostConfig"]["Binds"],
            ),
            ("shm_size", {"shm_size": "256m"}, lambda a: a["HostConfig"]["ShmSize"] == 256 << 20),
            (
                "restart_policy",
                {"restart_policy": "on-failure"},
                lambda a: a["HostConfig"]["RestartPolicy"]["Name"] == "on-failure",
            ),
        ]
        # One re-creation for all five keeps this test short; each setting must be named.
        before = inspect()
        assert not any(applied(before) for _, _, applied in changes)
        drifted_spec = dict(spec)
        for _, change, _ in changes:
            drifted_spec.update(change)
        planned = run_module(drifted_spec, check=True)
        assert inspect()["Id"] == started["container_id"]  # check mode changed nothing
        drifted = run_module(drifted_spec)
        assert drifted["changed"] is True, drifted.get("msg")
        fields = {field for field, _, _ in changes}
        # env too: WORKBENCH_IMAGE_ID names the new image.
        assert set(planned["drift"]) == set(drifted["drift"]) == fields | {"env"}, drifted
        assert drifted["container_id"] != started["container_id"]
        after = inspect()
        for field, _, applied in changes:
            assert applied(after), field
        # And what the daemon now reports reads as no drift at all.
        again = run_module(drifted_spec)
        assert again["changed"] is False and again["drift"] == [], again
        removed = run_module({"name": spec["name"], "state": "absent"})
        assert removed["changed"] is True


def _non_loopback_addresses() -> list[str]:
    """This host's IPv4 addresses other than the loopback (its LAN address, docker0's)."""
    import subprocess

    shown = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    found = [line.split()[3].split("/")[0] for line in shown.splitlines()]
    return [a for a in found if not a.startswith("127.")]


def test_on_the_hosts_network_jupyter_answers_on_the_loopback_only(
    run_module, spec: dict, docker_client
) -> None:
    """A node of a workbench spanning machines shares the host's network (the rendezvous
    and NCCL reach it at the host's address); its notebook stays on the host's loopback."""
    host_spec = {**spec, "network": "host", "extra_hosts": {"node-001": "10.11.12.13"}}
    started = run_module(host_spec)
    assert started["changed"] is True, started.get("msg")
    assert "create-network" not in started["actions"]
    token = Path(spec["token_file"]).read_text().strip()
    assert jupyter(started["url"], token) == 200
    assert started["probe"]["torch"].startswith("2.14.1")
    container = docker_client.containers.get(spec["name"])
    assert container.attrs["HostConfig"]["NetworkMode"] == "host"
    assert not container.attrs["HostConfig"]["PortBindings"]
    # Nothing answers on the host's other addresses at that port: not published, not bound.
    others = _non_loopback_addresses()
    assert others, "this host has no address but the loopback to try"
    for address in others:
        with pytest.raises(OSError), socket.create_connection((address, spec["port"]), 2):
            pass
    # The peers' names are in its /etc/hosts; it resolves them as the workload would.
    resolved = container.exec_run(
        ["python", "-c", "import socket; print(socket.gethostbyname('node-001'))"]
    )
    assert resolved.output.decode().strip() == "10.11.12.13"
    assert token not in repr(container.attrs)
    again = run_module(host_spec)
    assert again["changed"] is False, again.get("drift")
    assert run_module({"name": spec["name"], "state": "absent"})["changed"] is True
    assert not [n for n in docker_client.networks.list() if n.name == f"{spec['name']}-net"]
