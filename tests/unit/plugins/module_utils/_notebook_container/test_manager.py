"""One module run with the Docker SDK mocked at its boundary: check mode, create, start, failures."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_container import (
    common,
    health,
    host,
    manager,
)
from docker.errors import APIError, ImageNotFound

from .helpers import (
    IMAGE_ID,
    FakeClock,
    desired,
    fake_client,
    inspect_of,
    params,
    runner,
)

TOKEN = "s3cr3t-" + "x" * 36


def test_check_mode_plans_without_side_effects(tmp_path: Path) -> None:
    client = fake_client(None)
    result = runner(client, check_mode=True, token_file=str(tmp_path / "token")).run()
    assert result.changed and result.actions == ["create-network", "create", "start"]
    client.containers.create.assert_not_called()
    client.networks.create.assert_not_called()
    assert not (tmp_path / "token").exists() and not (tmp_path / "token.d").exists()


def test_check_mode_predicts_the_plan_but_not_the_health_check(tmp_path: Path) -> None:
    """What the module's attributes say check mode does: the chosen port and a new token
    count as changes, nothing is written, and health, probe and GPU are not claimed."""
    client = fake_client(None)
    port_file = tmp_path / "port"
    box = runner(
        client,
        check_mode=True,
        gpu=True,
        expect_gpu="true",
        port=None,
        port_file=str(port_file),
        token=None,
        token_file=str(tmp_path / "token"),
    )
    with mock.patch.object(host, "port_is_free", lambda address, port: True):
        result = box.run()
    assert result.changed and result.url == "http://127.0.0.1:8888"
    assert result.diff["after"]["ports"] == "127.0.0.1:8888"
    assert result.probe is None and result.seconds_to_healthy is None
    assert not port_file.exists() and not (tmp_path / "token").exists()
    client.containers.create.return_value.exec_run.assert_not_called()


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
    with pytest.raises(
        common.NotebookError, match=re.escape("port 127.0.0.1:18888 is already taken")
    ):
        runner(client, token_file=str(tmp_path / "token")).run()
    created.remove.assert_called_once_with(force=True)


def test_missing_image_says_how_to_get_it(tmp_path: Path) -> None:
    client = fake_client(None)
    client.images.get.side_effect = ImageNotFound("nope")
    with pytest.raises(common.NotebookError, match="is not on this host; build it first"):
        runner(client, token_file=str(tmp_path / "token")).run()


def test_expected_gpu_missing_fails_with_diagnosis_and_logs(tmp_path: Path) -> None:
    client = fake_client(None)
    with pytest.raises(common.NotebookError) as failure:
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
        common.NotebookError,
        match=re.escape("cannot reach the Docker daemon at unix:///nonexistent/docker.sock"),
    ):
        manager.NotebookContainer(params(), False).connect()


def test_failure_logs_mask_the_token(tmp_path: Path) -> None:
    client = fake_client(None)
    created = client.containers.create.return_value
    created.logs.return_value = f"http://127.0.0.1:8888/lab?token={TOKEN}\n".encode()
    created.exec_run.return_value = (1, b"ImportError: no torch\n")
    runner = manager.NotebookContainer(
        params(token=TOKEN, token_file=str(tmp_path / "token")),
        False,
        client=client,
        gpu_present=lambda: False,
        status=lambda u, t: 200,
    )
    with pytest.raises(common.NotebookError) as failure:
        runner.run()
    assert TOKEN not in repr(failure.value.logs) + str(failure.value)
    assert failure.value.logs == [f"http://127.0.0.1:8888/lab?token={common.HIDDEN}"]


def test_the_chosen_port_is_recorded_and_kept(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    client = fake_client(None)
    other = mock.MagicMock()
    other.name = "another-workbench"
    other.attrs = {
        "HostConfig": {"PortBindings": {"8888/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8888"}]}}
    }
    client.containers.list.return_value = [other]

    def runner(**over: Any) -> manager.NotebookContainer:
        clock = FakeClock()
        return manager.NotebookContainer(
            params(token_file=str(tmp_path / "token"), port_file=str(port_file), **over),
            False,
            client=client,
            gpu_present=lambda: False,
            clock=clock,
            sleep=clock.sleep,
            status=lambda u, t: 200,
        )

    with mock.patch.object(host, "port_is_free", lambda address, port: port != 8889):
        first = runner(port=None).run()
    assert first.url == "http://127.0.0.1:8890"  # 8888 is the other's, 8889 is busy
    assert port_file.read_text() == "8890\n"
    # A rerun keeps it without searching, even where 8890 now looks busy (its own container).
    with mock.patch.object(host, "port_is_free", lambda address, port: False):
        assert runner(port=None).resolve_port(None) is False
    explicit = runner(port=9999)
    assert explicit.resolve_port(None) is True and port_file.read_text() == "9999\n"


def test_a_crash_loop_is_stopped_with_its_logs(tmp_path: Path) -> None:
    client = fake_client(None)
    created = client.containers.create.return_value
    created.logs.return_value = b"Traceback: boom\n"

    def reload() -> None:
        # Restarted twice and running again, and still not answering: a loop all the same.
        created.attrs = {"RestartCount": 2, "State": {"Status": "running", "ExitCode": 0}}

    created.reload.side_effect = reload
    clock = FakeClock()
    runner = manager.NotebookContainer(
        params(token_file=str(tmp_path / "token"), timeout=180),
        False,
        client=client,
        gpu_present=lambda: False,
        clock=clock,
        sleep=clock.sleep,
        status=lambda u, t: None,
    )
    with pytest.raises(common.NotebookError) as failure:
        runner.run()
    assert "crash loop" in str(failure.value) and "is stopped" in str(failure.value)
    assert failure.value.logs == ["Traceback: boom"]
    created.stop.assert_called_once()
    assert clock.now - 100.0 <= health.CRASH_GRACE + 0.5  # not the 180 s timeout


def test_an_unreachable_daemon_advises_only_real_options() -> None:
    with pytest.raises(common.NotebookError) as failure:
        manager.NotebookContainer(
            params(docker_host="unix:///nonexistent/docker.sock"), False
        ).connect()
    text = str(failure.value)
    assert text.startswith("cannot reach the Docker daemon at unix:///nonexistent/docker.sock")
    assert "start dockerd" in text and "docker_host" in text
    module = Path(manager.__file__).parents[2] / "modules" / "notebook_container.py"
    assert re.search(r"^\s+docker_host=dict\(", module.read_text(), re.M), (
        "docker_host is an option"
    )


def test_an_unchanged_healthy_container_reuses_its_last_good_probe(tmp_path: Path) -> None:
    """The torch probe costs seconds on every no-op rerun; a container that is the same one,
    started the same time, from the same image with the same driver gives the recorded answer.
    A restart (another StartedAt) or another driver probes again."""
    attrs = inspect_of(desired(gpus="none", token_file=str(tmp_path / "token")))
    attrs["State"]["StartedAt"] = "2027-01-15T12:00:00.1Z"
    client = fake_client(attrs)
    running = client.containers.get.return_value
    running.exec_run.return_value = client.containers.create.return_value.exec_run.return_value
    driver = {"version": "580.65"}

    def run() -> manager.Result:
        box = runner(client, token_file=str(tmp_path / "token"), gpus="none")
        box.driver_version = lambda: driver["version"]
        return box.run()

    first = run()
    assert "start" not in first.actions
    assert first.probe["torch"] == "2.14.1+cu130" and not first.probe_recorded
    assert running.exec_run.call_count == 1
    record = tmp_path / "token.probe.json"
    assert (record.stat().st_mode & 0o777) == 0o600

    second = run()
    assert second.probe == first.probe and second.probe_recorded
    assert running.exec_run.call_count == 1  # no second torch import

    attrs["State"]["StartedAt"] = "2027-01-15T13:00:00.2Z"  # restarted since
    third = run()
    assert not third.probe_recorded and running.exec_run.call_count == 2

    driver["version"] = "590.10"  # another host driver
    fourth = run()
    assert not fourth.probe_recorded and running.exec_run.call_count == 3
    assert run().probe_recorded and running.exec_run.call_count == 3


# -- the nodes of a workbench share a network ------------------------------------------------


def test_a_node_joins_the_shared_network_with_icc_and_its_alias(tmp_path: Path) -> None:
    client = fake_client(None)
    runner(
        client,
        token_file=str(tmp_path / "token"),
        network="wb-nodes",
        network_icc=True,
        network_aliases=["node-001"],
    ).run()
    created = client.networks.create.call_args
    assert created.args == ("wb-nodes",)
    assert created.kwargs["options"] == {"com.docker.network.bridge.enable_icc": "true"}
    kwargs = client.containers.create.call_args.kwargs
    assert kwargs["network"] == "wb-nodes"
    # No networking_config: Debian 12's Docker SDK (an instance's Python) has none.
    assert "networking_config" not in kwargs
    container = client.containers.create.return_value
    client.api.connect_container_to_network.assert_called_once_with(
        container.id, "wb-nodes", aliases=["node-001"]
    )


def test_a_single_notebook_keeps_its_own_network_without_icc(tmp_path: Path) -> None:
    client = fake_client(None)
    runner(client, token_file=str(tmp_path / "token")).run()
    created = client.networks.create.call_args
    assert created.args == ("wyvern-test-module-unit-net",)
    assert created.kwargs["options"] == {"com.docker.network.bridge.enable_icc": "false"}
    assert "networking_config" not in client.containers.create.call_args.kwargs
    client.api.connect_container_to_network.assert_not_called()


def test_a_shared_network_with_the_other_icc_setting_fails_with_the_fix(tmp_path: Path) -> None:
    client = fake_client(None)
    client.networks.get.side_effect = None
    client.networks.get.return_value = mock.MagicMock(
        attrs={"Options": {"com.docker.network.bridge.enable_icc": "false"}, "Labels": {}}
    )
    with pytest.raises(common.NotebookError, match=r"network wb-nodes exists .*docker network rm"):
        runner(
            client, token_file=str(tmp_path / "token"), network="wb-nodes", network_icc=True
        ).run()
    client.containers.create.assert_not_called()


def test_on_the_hosts_network_no_network_is_made_checked_or_removed(tmp_path: Path) -> None:
    client = fake_client(None)
    # Docker's own host network exists and has no ICC option: never asked about.
    client.networks.get.side_effect = None
    client.networks.get.return_value = mock.MagicMock(attrs={"Options": {}, "Labels": {}})
    result = runner(client, token_file=str(tmp_path / "token"), network="host").run()
    assert "create-network" not in result.actions
    client.networks.create.assert_not_called()
    assert client.containers.create.call_args.kwargs["network_mode"] == "host"
    assert result.url == "http://127.0.0.1:18888"
    gone = fake_client(inspect_of(desired(network="host")))
    gone.networks.get.side_effect = None
    gone.networks.get.return_value = mock.MagicMock(attrs={"Options": {}, "Labels": {}})
    removed = runner(gone, state="absent", token_file=str(tmp_path / "token")).run()
    assert removed.actions[0] == "remove"
    assert "remove-joined-network" not in removed.actions
