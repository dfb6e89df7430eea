"""Issue 11 against the real Docker engine and the real notebook image: the token only as a
read-only file, Jupyter reachable only through its loopback port, an init as PID 1, crash
loops found in seconds, true messages, a public bind only on purpose, a port per workbench."""

from __future__ import annotations

import http.client
import io
import json
import socket
import time
import urllib.request
from pathlib import Path

import docker
import pytest

from tests.support.cleanup import remove_workbench

from .conftest import PREFIX, free_port

LOOP_IMAGE = f"{PREFIX}crash-loop:1"
SILENT_IMAGE = f"{PREFIX}silent:1"
KNOWN_TOKEN = "wyvern-known-token-" + "k" * 30


@pytest.fixture
def spec(notebook_image: str, container_name: str, tmp_path: Path) -> dict:
    return {
        "name": container_name,
        "image": notebook_image,
        "port": free_port(),
        "token": KNOWN_TOKEN,
        "token_file": str(tmp_path / "token"),
        "timeout": 120,
    }


def status(port: int, token: str | None, host: str | None = None) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"token {token}"} if token else {}
    if host:
        headers["Host"] = host
    connection.request("GET", "/api/status", headers=headers)
    code = connection.getresponse().status
    connection.close()
    return code


def processes(container) -> dict[str, str]:
    """Command line -> environment of every process in the container, read as its user."""
    script = (
        "import glob, json, os\n"
        "out = {}\n"
        "for d in glob.glob('/proc/[0-9]*'):\n"
        "    try:\n"
        "        cmd = open(d + '/cmdline', 'rb').read().replace(b'\\0', b' ').decode()\n"
        "        out[d + ' ' + cmd] = open(d + '/environ', 'rb').read().decode('utf-8', 'replace')\n"
        "    except OSError:\n"
        "        pass\n"
        "print(json.dumps(out))\n"
    )
    code, output = container.exec_run(["python", "-c", script], user="1000:1000")
    assert code == 0, output
    return json.loads(output.decode().strip().splitlines()[-1])


def start_kernel(port: int, token: str) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/kernels",
        data=b"{}",
        method="POST",
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["id"]


# ------------------------------------------------------------------ items 1 and 2


def test_the_token_is_a_read_only_file_never_in_the_environment(
    run_module, spec: dict, docker_client
) -> None:
    started = run_module(spec)
    assert started["changed"] is True, started.get("msg")
    assert KNOWN_TOKEN not in json.dumps(started)
    assert status(spec["port"], KNOWN_TOKEN) == 200  # Jupyter read the mounted file
    assert status(spec["port"], None) == 403

    container = docker_client.containers.get(spec["name"])
    assert KNOWN_TOKEN not in json.dumps(container.attrs)  # docker inspect
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    assert "JUPYTER_TOKEN" not in env
    assert env["JUPYTER_TOKEN_FILE"] == "/run/secrets/jupyter_token"
    mount = next(
        m for m in container.attrs["Mounts"] if m["Destination"] == "/run/secrets/jupyter_token"
    )
    assert mount["RW"] is False
    host_copy = Path(mount["Source"])
    assert host_copy.stat().st_mode & 0o777 == 0o444
    assert host_copy.parent.stat().st_mode & 0o777 == 0o700  # host users cannot reach it

    start_kernel(spec["port"], KNOWN_TOKEN)
    deadline = time.monotonic() + 60
    while not any("ipykernel_launcher" in command for command in processes(container)):
        assert time.monotonic() < deadline, "the kernel did not start"
        time.sleep(0.5)
    every = processes(container)  # /proc/<pid>/environ of Jupyter, the kernel and PID 1
    assert any("jupyter" in command for command in every), every.keys()
    assert KNOWN_TOKEN not in json.dumps(every)

    # A changed token is applied (drift) and the old one stops working.
    changed = run_module({**spec, "token": "wyvern-second-token-" + "z" * 30})
    assert changed["changed"] is True and "labels" in changed["drift"]
    assert status(spec["port"], "wyvern-second-token-" + "z" * 30) == 200
    assert status(spec["port"], KNOWN_TOKEN) == 403
    again = run_module({**spec, "token": "wyvern-second-token-" + "z" * 30})
    assert again["changed"] is False, again


# ------------------------------------------------------------------ item 5


def test_jupyter_is_reachable_only_through_the_loopback_port(
    run_module, spec: dict, docker_client, debian_base_image: str, container_name: str
) -> None:
    started = run_module(spec)
    assert started["changed"] is True, started.get("msg")
    container = docker_client.containers.get(spec["name"])
    networks = container.attrs["NetworkSettings"]["Networks"]
    assert list(networks) == [f"{container_name}-net"]
    address = networks[f"{container_name}-net"]["IPAddress"]
    network = docker_client.networks.get(f"{container_name}-net")
    assert network.attrs["Options"]["com.docker.network.bridge.enable_icc"] == "false"

    probe = (
        "import socket\n"
        "s = socket.socket(); s.settimeout(3)\n"
        f"print('OPEN' if s.connect_ex(('{address}', 8888)) == 0 else 'CLOSED')\n"
    )
    # A container on Docker's default bridge (where `docker run` puts it).
    output = docker_client.containers.run(
        debian_base_image, ["python3", "-c", probe], remove=True, name=f"{container_name}-probe"
    )
    assert output.decode().strip() == "CLOSED"

    assert status(spec["port"], KNOWN_TOKEN) == 200
    assert status(spec["port"], KNOWN_TOKEN, host=f"127.0.0.1:{spec['port']}") == 200
    assert status(spec["port"], KNOWN_TOKEN, host=f"localhost:{spec['port']}") == 200
    # DNS rebinding: a page from evil.example that resolves to 127.0.0.1 is refused.
    assert status(spec["port"], KNOWN_TOKEN, host=f"evil.example:{spec['port']}") == 403

    removed = run_module({"name": spec["name"], "state": "absent"})
    assert removed["actions"] == ["remove", "remove-network"]
    with pytest.raises(docker.errors.NotFound):
        docker_client.networks.get(f"{container_name}-net")


# ------------------------------------------------------------------ item 14


def test_an_init_is_pid_1_reaps_orphans_and_stops_fast(
    run_module, spec: dict, docker_client
) -> None:
    started = run_module(spec)
    assert started["changed"] is True, started.get("msg")
    container = docker_client.containers.get(spec["name"])
    assert container.exec_run(["cat", "/proc/1/comm"]).output.decode().strip() == "docker-init"

    # A process whose parent exits is reparented to PID 1, which must reap it.
    container.exec_run(["sh", "-c", "sleep 1 & exit 0"])
    time.sleep(2.5)
    states = container.exec_run(["sh", "-c", "cat /proc/[0-9]*/stat"]).output.decode()
    zombies = [line for line in states.splitlines() if line.split(") ", 1)[-1].startswith("Z")]
    assert zombies == []

    began = time.monotonic()
    container.stop(timeout=10)
    assert time.monotonic() - began < 5, "SIGTERM was ignored; Docker had to SIGKILL"


# ------------------------------------------------------------------ items 11 and 12


def build(docker_client, tag: str, base: str, command: str) -> str:
    dockerfile = f'FROM {base}\nCMD ["sh", "-c", "{command}"]\n'
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    return tag


def test_a_crash_loop_fails_in_seconds_with_logs_and_is_stopped(
    run_module, spec: dict, docker_client, debian_base_image: str
) -> None:
    image = build(docker_client, LOOP_IMAGE, debian_base_image, "echo crash-loop-marker; exit 3")
    began = time.monotonic()
    failed = run_module({**spec, "image": image, "user": "1000", "timeout": 180})
    elapsed = time.monotonic() - began
    assert failed.get("failed") is True
    assert elapsed < 30, f"took {elapsed:.0f} s: the crash loop was taken for a slow start"
    assert "crash loop, not a slow start" in failed["msg"] and "exit code 3" in failed["msg"]
    assert "raise the timeout" not in failed["msg"]
    assert "crash-loop-marker" in failed["logs"]
    container = docker_client.containers.get(spec["name"])
    time.sleep(1)
    container.reload()
    assert container.status == "exited"  # stopped, not left looping


def test_a_health_timeout_says_the_container_is_left_running(
    run_module, spec: dict, docker_client, debian_base_image: str
) -> None:
    image = build(
        docker_client, SILENT_IMAGE, debian_base_image, "echo silent-marker; exec sleep 600"
    )
    failed = run_module({**spec, "image": image, "user": "1000", "timeout": 3})
    assert failed.get("failed") is True
    assert "did not answer within 3s" in failed["msg"]
    assert "the container is left running" in failed["msg"]
    assert docker_client.containers.get(spec["name"]).status == "running"  # as the message says


def test_an_unreachable_daemon_names_a_real_option(run_module, spec: dict) -> None:
    failed = run_module({**spec, "docker_host": "unix:///nonexistent/docker.sock"})
    assert failed.get("failed") is True
    assert "Unsupported parameters" not in failed["msg"]
    assert failed["msg"].startswith(
        "cannot reach the Docker daemon at unix:///nonexistent/docker.sock"
    )


# ------------------------------------------------------------------ item 13


def test_a_public_bind_needs_the_opt_in(run_module, spec: dict, docker_client) -> None:
    refused = run_module({**spec, "bind_address": "0.0.0.0"})
    assert refused.get("failed") is True
    assert "allow_public_bind: true" in refused["msg"]
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(spec["name"])
    planned = run_module({**spec, "bind_address": "0.0.0.0", "allow_public_bind": True}, check=True)
    assert planned["changed"] is True
    assert any("token alone" in warning for warning in planned.get("warnings", []))


# ------------------------------------------------------------------ item 15


def test_each_workbench_gets_its_own_port_and_keeps_it(
    run_module, spec: dict, docker_client, tmp_path: Path, container_name: str
) -> None:
    second_name = f"{container_name}-2"
    first = {**spec, "port_file": str(tmp_path / "one" / "port")}
    del first["port"]
    second = {
        **first,
        "name": second_name,
        "token_file": str(tmp_path / "two-token"),
        "port_file": str(tmp_path / "two" / "port"),
    }
    try:
        a = run_module(first)
        b = run_module(second)
        assert a["changed"] and b["changed"], (a.get("msg"), b.get("msg"))
        port_a = int(Path(first["port_file"]).read_text())
        port_b = int(Path(second["port_file"]).read_text())
        assert port_a != port_b and port_a >= 8888 and port_b >= 8888
        assert a["url"].endswith(f":{port_a}") and b["url"].endswith(f":{port_b}")
        assert status(port_a, KNOWN_TOKEN) == 200 and status(port_b, KNOWN_TOKEN) == 200
        again = run_module(first)
        assert again["changed"] is False and again["url"] == a["url"]
    finally:
        remove_workbench(docker_client, second_name)


def test_a_recorded_port_taken_by_something_else_is_a_clear_error(
    run_module, spec: dict, tmp_path: Path
) -> None:
    port_file = tmp_path / "port"
    port = free_port()
    port_file.write_text(f"{port}\n")
    args = {**spec, "port_file": str(port_file)}
    del args["port"]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        failed = run_module(args)
    assert failed.get("failed") is True
    assert f"port 127.0.0.1:{port} is already taken" in failed["msg"]
    assert f"delete {port_file} to choose another" in failed["msg"]
