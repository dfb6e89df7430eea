"""Unit tests of the notebook_container hardening (issue 11): the token as a read-only file,
the bind-address opt-in, the per-workbench port, crash-loop detection and true messages."""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from ansible_collections.wyvern.workbench.plugins.module_utils import _notebook_container as nc

from .test__notebook_container import IMAGE_ID, FakeClock, fake_client, params

TOKEN = "s3cr3t-" + "x" * 36


def spec(**over: Any) -> dict[str, Any]:
    p = params(token=TOKEN, **over)
    return nc.desired_spec(p, IMAGE_ID, TOKEN, "none")


# ------------------------------------------------------------------ the token (items 1, 2)


def test_the_token_is_a_read_only_mount_never_an_environment_variable() -> None:
    want = spec()
    assert TOKEN not in repr(want)
    assert want["env"]["JUPYTER_TOKEN_FILE"] == "/run/secrets/jupyter_token"
    assert "JUPYTER_TOKEN" not in want["env"]
    assert "/nonexistent/token.d/jupyter_token:/run/secrets/jupyter_token:ro" in want["mounts"]
    assert want["labels"][nc.TOKEN_DIGEST_LABEL] == nc.token_digest(TOKEN) != TOKEN


def test_env_cannot_bring_the_token_back() -> None:
    with pytest.raises(nc.NotebookError, match="env must not set JUPYTER_TOKEN"):
        spec(env={"JUPYTER_TOKEN": TOKEN})


def test_token_mount_is_0444_in_a_0700_directory_written_in_place(tmp_path: Path) -> None:
    token_file = str(tmp_path / "token")
    assert nc.ensure_token_mount(TOKEN, token_file, check_mode=True)
    assert not (tmp_path / "token.d").exists()

    assert nc.ensure_token_mount(TOKEN, token_file, check_mode=False)
    mount = Path(nc.token_mount_path(token_file))
    assert mount.read_text() == TOKEN  # no newline: Jupyter does not strip the file
    assert stat.S_IMODE(mount.stat().st_mode) == 0o444
    assert stat.S_IMODE(mount.parent.stat().st_mode) == 0o700
    assert not nc.ensure_token_mount(TOKEN, token_file, check_mode=False)

    inode = mount.stat().st_ino
    assert nc.ensure_token_mount("new-token", token_file, check_mode=False)
    assert mount.read_text() == "new-token"
    assert mount.stat().st_ino == inode  # a running container's bind mount sees it


def test_failure_logs_mask_the_token(tmp_path: Path) -> None:
    client = fake_client(None)
    created = client.containers.create.return_value
    created.logs.return_value = f"http://127.0.0.1:8888/lab?token={TOKEN}\n".encode()
    created.exec_run.return_value = (1, b"ImportError: no torch\n")
    runner = nc.NotebookContainer(
        params(token=TOKEN, token_file=str(tmp_path / "token")),
        False,
        client=client,
        gpu_present=lambda: False,
        status=lambda u, t: 200,
    )
    with pytest.raises(nc.NotebookError) as failure:
        runner.run()
    assert TOKEN not in repr(failure.value.logs) + str(failure.value)
    assert failure.value.logs == [f"http://127.0.0.1:8888/lab?token={nc.HIDDEN}"]


# ------------------------------------------------------------------ bind address (items 5, 13)


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_needs_no_opt_in(address: str) -> None:
    assert nc.check_bind_address(address, False) is None
    assert "WYVERN_ALLOW_REMOTE_ACCESS" not in spec(bind_address=address)["env"]


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "10.0.0.5"])
def test_a_public_bind_needs_the_opt_in(address: str) -> None:
    with pytest.raises(nc.NotebookError) as refused:
        nc.check_bind_address(address, False)
    assert "allow_public_bind: true" in str(refused.value)
    assert "notebook_allow_public_bind" in str(refused.value)
    warning = nc.check_bind_address(address, True)
    assert warning and "token alone" in warning and "DNS rebinding" in warning
    # Browsers elsewhere send the host's address as Host: Jupyter must accept it then.
    assert (
        spec(bind_address=address, allow_public_bind=True)["env"]["WYVERN_ALLOW_REMOTE_ACCESS"]
        == "1"
    )


# ------------------------------------------------------------------ port per workbench (item 15)


def test_choose_port_keeps_the_recorded_then_the_published_port() -> None:
    never = mock.Mock(side_effect=AssertionError("no search"))
    assert nc.choose_port(9001, 9002, set(), never) == 9001
    assert nc.choose_port(None, 9002, set(), never) == 9002


def test_choose_port_skips_ports_other_containers_publish_or_something_listens_on() -> None:
    busy = {8889}
    assert nc.choose_port(None, None, {8888}, lambda p: p not in busy) == 8890
    with pytest.raises(nc.NotebookError, match="no free port in 8888-8987 for Jupyter; set port"):
        nc.choose_port(None, None, set(), lambda p: False)


def test_the_chosen_port_is_recorded_and_kept(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    client = fake_client(None)
    other = mock.MagicMock()
    other.name = "another-workbench"
    other.attrs = {
        "HostConfig": {"PortBindings": {"8888/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8888"}]}}
    }
    client.containers.list.return_value = [other]

    def runner(**over: Any) -> nc.NotebookContainer:
        clock = FakeClock()
        return nc.NotebookContainer(
            params(token_file=str(tmp_path / "token"), port_file=str(port_file), **over),
            False,
            client=client,
            gpu_present=lambda: False,
            clock=clock,
            sleep=clock.sleep,
            status=lambda u, t: 200,
        )

    with mock.patch.object(nc, "port_is_free", lambda address, port: port != 8889):
        first = runner(port=None).run()
    assert first.url == "http://127.0.0.1:8890"  # 8888 is the other's, 8889 is busy
    assert port_file.read_text() == "8890\n"
    # A rerun keeps it without searching, even where 8890 now looks busy (its own container).
    with mock.patch.object(nc, "port_is_free", lambda address, port: False):
        assert runner(port=None).resolve_port(None) is False
    explicit = runner(port=9999)
    assert explicit.resolve_port(None) is True and port_file.read_text() == "9999\n"


# ------------------------------------------------------------------ crash loops and messages (11, 12)


def test_a_restart_loop_is_found_within_a_poll_or_two() -> None:
    clock = FakeClock()
    states = iter(
        [
            nc.ContainerState("running"),
            nc.ContainerState("running", restart_count=1, exit_code=0),  # restarted, starting
            nc.ContainerState("restarting", restart_count=1, exit_code=3),  # crashed again
        ]
    )
    with pytest.raises(nc.CrashLoop) as failure:
        nc.wait_healthy(
            "http://x", "t", lambda: next(states), 180, 0.2, clock, clock.sleep, lambda u, t: None
        )
    assert clock.now - 100.0 < 1.0
    text = str(failure.value)
    assert "crash loop, not a slow start" in text and "exit code 3" in text
    assert "raise the timeout" not in text


def test_a_restarting_state_is_a_crash_loop_and_oom_is_named() -> None:
    clock = FakeClock()
    oom = nc.ContainerState("restarting", restart_count=0, exit_code=137, oom_killed=True)
    with pytest.raises(nc.CrashLoop, match="OOMKilled"):
        nc.wait_healthy(
            "http://x", "t", lambda: oom, 180, 0.2, clock, clock.sleep, lambda u, t: None
        )


def test_a_crash_loop_is_stopped_with_its_logs(tmp_path: Path) -> None:
    client = fake_client(None)
    created = client.containers.create.return_value
    created.logs.return_value = b"Traceback: boom\n"

    def reload() -> None:
        # Restarted twice and running again, and still not answering: a loop all the same.
        created.attrs = {"RestartCount": 2, "State": {"Status": "running", "ExitCode": 0}}

    created.reload.side_effect = reload
    clock = FakeClock()
    runner = nc.NotebookContainer(
        params(token_file=str(tmp_path / "token"), timeout=180),
        False,
        client=client,
        gpu_present=lambda: False,
        clock=clock,
        sleep=clock.sleep,
        status=lambda u, t: None,
    )
    with pytest.raises(nc.NotebookError) as failure:
        runner.run()
    assert "crash loop" in str(failure.value) and "is stopped" in str(failure.value)
    assert failure.value.logs == ["Traceback: boom"]
    created.stop.assert_called_once()
    assert clock.now - 100.0 <= nc.CRASH_GRACE + 0.5  # not the 180 s timeout


def test_one_restart_that_then_answers_is_healthy() -> None:
    clock = FakeClock()
    answers = iter([None, None, None, 200])
    restarted = nc.ContainerState("running", restart_count=1, exit_code=0)
    waited = nc.wait_healthy(
        "http://x", "t", lambda: restarted, 180, 0.5, clock, clock.sleep, lambda u, t: next(answers)
    )
    assert waited == pytest.approx(1.5)


def test_a_timeout_says_the_container_is_left_running() -> None:
    clock = FakeClock()
    with pytest.raises(nc.NotebookError) as failure:
        nc.wait_healthy(
            "http://x",
            "t",
            lambda: nc.ContainerState("running"),
            3,
            0.5,
            clock,
            clock.sleep,
            lambda u, t: None,
        )
    assert "the container is left running" in str(failure.value)
    assert "state: absent" in str(failure.value)


def test_an_unreachable_daemon_advises_only_real_options() -> None:
    with pytest.raises(nc.NotebookError) as failure:
        nc.NotebookContainer(params(docker_host="unix:///nonexistent/docker.sock"), False).connect()
    text = str(failure.value)
    assert text.startswith("cannot reach the Docker daemon at unix:///nonexistent/docker.sock")
    assert "start dockerd" in text and "docker_host" in text
    module = Path(nc.__file__).parents[1] / "modules" / "notebook_container.py"
    assert re.search(r"^\s+docker_host=dict\(", module.read_text(), re.M), (
        "docker_host is an option"
    )
