"""The auto-stop agent against a real Jupyter in the real notebook image.

One notebook container (started by wyvern.workbench.notebook_container, so the port and
token files are laid out as on a workbench) for the module: a kernel executing a long
cell keeps the workbench busy, an idle kernel does not, and the agent's own polling does
not reset Jupyter's idle clock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tornado.websocket import websocket_connect

from tests.support.ports import reserved_port
from tests.unit.roles.autostop_support import load

from .conftest import PREFIX, remove_container

agent, hard = load()


class Notebook:
    def __init__(self, home: Path, port: int, name: str) -> None:
        self.home, self.port, self.name = home, port, name
        self.token = (home / "token").read_text().strip()
        self.url = f"http://127.0.0.1:{port}"

    def api(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def server_last_activity(self) -> str:
        # /api/status is one of the handlers that do not track activity themselves.
        return self.api("GET", "/api/status")["last_activity"]

    def execute(self, kernel_id: str, code: str) -> None:
        """Send one execute_request over the kernel's websocket, as JupyterLab does."""

        async def send() -> None:
            ws = await websocket_connect(
                f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels?token={self.token}"
            )
            msg_id = uuid.uuid4().hex
            await ws.write_message(
                json.dumps(
                    {
                        "header": {
                            "msg_id": msg_id,
                            "username": "test",
                            "session": uuid.uuid4().hex,
                            "msg_type": "execute_request",
                            "version": "5.3",
                            "date": dt.datetime.now(dt.UTC).isoformat(),
                        },
                        "parent_header": {},
                        "metadata": {},
                        "content": {
                            "code": code,
                            "silent": False,
                            "store_history": False,
                            "user_expressions": {},
                            "allow_stdin": False,
                            "stop_on_error": True,
                        },
                        "channel": "shell",
                        "buffers": [],
                    }
                )
            )
            # Wait for the kernel to take it (status busy for our message), then leave.
            while True:
                raw = await asyncio.wait_for(ws.read_message(), 60)
                assert raw is not None, "the kernel websocket closed"
                msg = json.loads(raw)
                if (
                    msg.get("parent_header", {}).get("msg_id") == msg_id
                    and msg["msg_type"] == "status"
                ):
                    break
            ws.close()

        asyncio.run(send())

    def wait_state(self, kernel_id: str, state: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            kernel = self.api("GET", f"/api/kernels/{kernel_id}?no_track_activity=1")
            if kernel["execution_state"] == state:
                return kernel
            time.sleep(0.5)
        raise AssertionError(f"kernel {kernel_id} never {state}: {kernel}")


@pytest.fixture(scope="module")
def notebook(notebook_image: str, docker_client, repo_root: Path, ansible_env, tmp_path_factory):
    home = tmp_path_factory.mktemp("autostop-nb")
    (home / "outputs").mkdir()
    (home / "outputs").chmod(0o777)
    name = f"{PREFIX}autostop-{secrets.token_hex(3)}"
    remove_container(docker_client, name)
    with reserved_port() as port:
        args = {
            "name": name,
            "image": notebook_image,
            "port": port,
            "port_file": str(home / "port"),
            "token_file": str(home / "token"),
            "volumes": [f"{home / 'outputs'}:/workspace/outputs:rw"],
            "timeout": 120,
        }
        proc = subprocess.run(
            [
                "ansible",
                "localhost",
                "-c",
                "local",
                "-m",
                "wyvern.workbench.notebook_container",
                "-a",
                json.dumps(args),
                "-e",
                "ansible_python_interpreter={{ ansible_playbook_python }}",
            ],
            cwd=repo_root,
            env=ansible_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout[-3000:]
        yield Notebook(home, port, name)
    remove_container(docker_client, name)


@pytest.fixture
def kernel(notebook: Notebook) -> Iterator[str]:
    # Jupyter calls a kernel no client has connected to yet "starting"; execute() connects.
    kernel_id = notebook.api("POST", "/api/kernels", {"name": "python3"})["id"]
    yield kernel_id
    notebook.api("DELETE", f"/api/kernels/{kernel_id}")


def config(notebook: Notebook, tmp_path: Path, idle_seconds: float) -> dict:
    """An aws-style config whose power-off only writes a file: nothing is stopped."""
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "target": "aws",
                "notebook_home": str(notebook.home),
                "container": notebook.name,
                "state_dir": str(tmp_path / "state"),
                "idle_seconds": idle_seconds,
                "warn_seconds": 0,
                "poweroff_command": ["/bin/sh", "-c", f"touch {tmp_path / 'powered-off'}"],
                "proc_root": str(tmp_path / "proc"),  # no SSH session, no boot time
            }
        )
    )
    (tmp_path / "proc").mkdir()
    return hard.load_config(str(path))


def test_a_long_cell_keeps_the_workbench_busy(
    notebook: Notebook, kernel: str, tmp_path: Path
) -> None:
    notebook.execute(kernel, "import time; time.sleep(45)")
    notebook.wait_state(kernel, "busy")
    reading = agent.read_jupyter(str(notebook.home))
    assert reading.state == "active", reading
    # Idle window 1 s, state saying the last activity was long ago: still no power-off.
    cfg = config(notebook, tmp_path, idle_seconds=1)
    hard.write_json(str(tmp_path / "state" / "state.json"), {"last_active": time.time() - 3600})
    status = agent.tick(cfg)
    assert status["verdict"] == "active"
    assert any("jupyter active" in r and "busy" in r for r in status["reasons"])
    assert not (tmp_path / "powered-off").exists()
    notebook.api("POST", f"/api/kernels/{kernel}/interrupt")


def test_an_idle_kernel_does_not_keep_it_up(
    notebook: Notebook, kernel: str, tmp_path: Path
) -> None:
    notebook.execute(kernel, "x = 1 + 1")
    idle = notebook.wait_state(kernel, "idle")
    finished = agent.parse_iso(idle["last_activity"])
    reading = agent.read_jupyter(str(notebook.home))
    assert reading.state == "idle"
    # The kernel's own activity time is the idle clock's start: not before, not at polling.
    assert reading.last_active is not None and abs(reading.last_active - finished) < 1
    cfg = config(notebook, tmp_path, idle_seconds=2)
    deadline = time.monotonic() + 30
    while not (tmp_path / "powered-off").exists():
        assert time.monotonic() < deadline, "the agent never acted on an idle kernel"
        status = agent.tick(cfg)
        time.sleep(0.5)
    assert status["verdict"] == "act"
    assert status["last_active"] == pytest.approx(finished, abs=1)


def test_the_agents_polling_is_not_activity(
    notebook: Notebook, kernel: str, tmp_path: Path
) -> None:
    notebook.execute(kernel, "y = 2")
    kernel_before = notebook.wait_state(kernel, "idle")["last_activity"]
    time.sleep(1.1)  # Jupyter's timestamps would move by more than their resolution
    server_before = notebook.server_last_activity()
    cfg = config(notebook, tmp_path, idle_seconds=3600)
    for _ in range(3):
        agent.tick(cfg)
        agent.read_jupyter(str(notebook.home))
    assert notebook.server_last_activity() == server_before
    kernels = notebook.api("GET", "/api/kernels?no_track_activity=1")
    assert [k["last_activity"] for k in kernels if k["id"] == kernel] == [kernel_before]
    # The control: the same request without no_track_activity is activity to Jupyter.
    notebook.api("GET", "/api/kernels")
    assert notebook.server_last_activity() != server_before


def test_without_the_token_file_jupyter_is_unreadable_and_counts(
    notebook: Notebook, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "port").write_text(str(notebook.port))
    (home / "token").write_text("wrong")
    reading = agent.read_jupyter(str(home))
    assert reading.state == "unreadable"
    assert notebook.token not in reading.detail and "403" in reading.detail
