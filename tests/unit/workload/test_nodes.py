"""transfer_learning.nodes: a distributed run started from node 0's notebook.

The lines come from the collection's filter (the contract between the two is tested here);
the other nodes' Jupyter servers are replaced by a fake at their boundary (`Member`), and
torchrun by a script on PATH, so that failures can be made at will. The real path (two
containers, a real kernel) is tests/integration/test_nodes_local.py.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
import urllib.error
from pathlib import Path
from typing import ClassVar

import pytest
from transfer_learning import nodes
from transfer_learning.errors import WorkloadError

from plugins.filter import nodes as node_filters

TRAIN = ["--data", "/workspace/data/digits", "--epochs", "1"]


def _env(count: int = 2, **extra: str) -> dict[str, str]:
    return {nodes.ENV: json.dumps(node_filters.torchrun_templates(count)), **extra}


def test_the_lines_filled_in_are_the_playbooks_lines() -> None:
    lines = nodes.node_lines("run-1", TRAIN, _env(3))
    command = ["-m", "transfer_learning", "train", *TRAIN]
    assert lines == [node_filters.torchrun_command(command, 3, i, "run-1") for i in range(3)]
    assert [nodes.local_addr(line) for line in lines] == ["node-000", "node-001", "node-002"]


@pytest.mark.parametrize(
    ("run_id", "env", "wanted"),
    [
        ("r", {}, "WYVERN_TORCHRUN is not set"),
        ("has space", _env(), "run_id 'has space'"),
        ("a,b", _env(), "run_id 'a,b'"),
        ("../x", _env(), "run_id '../x'"),
        ("", _env(), "run_id ''"),
        ("$(reboot)", _env(), "run_id '$(reboot)'"),
        (".hidden", _env(), "run_id '.hidden'"),
        ("x" * 129, _env(), "up to 128"),
        ("r", {nodes.ENV: json.dumps([["torchrun", "--nnodes", "2"]])}, "cannot fill in"),
    ],
)
def test_bad_input_is_named(run_id: str, env: dict, wanted: str) -> None:
    with pytest.raises(WorkloadError, match=re.escape(wanted)):
        nodes.node_lines(run_id, TRAIN, env)


def test_run_on_nodes_keeps_its_own_output_dir_and_run_id(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="--output-dir and --run-id"):
        nodes.run_on_nodes([*TRAIN, "--run-id", "x"], "r", env=_env())


def test_the_shell_line_runs_a_node_detached_and_records_its_exit(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(nodes, "WORKSPACE", tmp_path)
    log, rc = tmp_path / "node-1.log", tmp_path / "node-1.rc"
    line = [sys.executable, "-c", "import sys; print(sys.argv[1:]); sys.exit(3)", "it's", "a b"]
    subprocess.run(["sh", "-c", nodes._shell_line(line, str(log), str(rc), ["true"])], check=True)
    _wait(lambda: rc.exists() and rc.read_text().strip())
    assert rc.read_text().strip() == "3"
    assert log.read_text().strip() == "[\"it's\", 'a b']"


class FakeMember:
    """Node i's Jupyter: what it was asked to run, and the files it shows."""

    def __init__(self, address: str, token: str, **_: object) -> None:
        self.address, self.token = address, token
        self.commands: list[str] = []
        self.files: dict[str, str] = {}
        self.gone = False
        FakeMember.made.append(self)

    made: ClassVar[list[FakeMember]] = []

    def shell(self, command: str) -> None:
        self.commands.append(command)

    def read(self, path: str) -> str | None:
        if self.gone:
            raise urllib.error.URLError("Name or service not known")
        return self.files.get(path)


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch) -> dict:
    """A fake torchrun on PATH (it prints an epoch line, writes rank 0's metrics and then
    waits for its stop file) and fake members."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "torchrun"
    script.write_text(
        "#!/bin/sh\n"
        'echo "epoch 1/1 train loss 1.0"\n'
        'run=""; while [ $# -gt 0 ]; do [ "$1" = --run-id ] && run="$2"; shift; done\n'
        f'while [ ! -e "{tmp_path}/release" ]; do sleep 0.05; done\n'
        f'echo \'{{"world_size": 2}}\' > "{tmp_path}/outputs/$run/metrics.json"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(nodes, "WORKSPACE", tmp_path)
    monkeypatch.setattr(nodes, "Member", FakeMember)
    monkeypatch.setattr(nodes, "stop_run", lambda run_id: 0)
    FakeMember.made = []
    return {"env": _env(2, JUPYTER_TOKEN_FILE=str(token)), "root": tmp_path}


def _start(cluster: dict, shown: list[str], timeout: float | None = 30) -> tuple:
    result: dict = {}

    def go() -> None:
        try:
            result["metrics"] = nodes.run_on_nodes(
                TRAIN, "r1", env=cluster["env"], poll=0.05, show=shown.append, timeout=timeout
            )
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=go)
    thread.start()
    _wait(lambda: FakeMember.made and any("setsid" in c for c in FakeMember.made[0].commands))
    return thread, result


def test_a_run_across_nodes_shows_rank_0_and_returns_its_metrics(cluster: dict) -> None:
    shown: list[str] = []
    thread, result = _start(cluster, shown)
    (member,) = FakeMember.made
    assert member.address == "node-001" and member.token == "t0ken"
    (start,) = [c for c in member.commands if "setsid" in c]
    assert "--local-addr node-001" in start and "outputs/r1/node-1.rc" in start
    _wait(lambda: "epoch 1/1 train loss 1.0" in shown)
    assert thread.is_alive()  # node 1 has not ended yet
    (cluster["root"] / "release").touch()
    member.files["outputs/r1/node-1.rc"] = "0\n"
    thread.join(10)
    assert result == {"metrics": {"world_size": 2}}
    assert not [c for c in member.commands if "stop-run" in c]


def test_a_failed_node_stops_every_node_and_raises_with_its_log(cluster: dict) -> None:
    shown: list[str] = []
    thread, result = _start(cluster, shown)
    (member,) = FakeMember.made
    member.files["outputs/r1/node-1.log"] = "RuntimeError: out of memory on node 1\n"
    member.files["outputs/r1/node-1.rc"] = "1"
    thread.join(10)
    error = result["error"]
    assert isinstance(error, nodes.NodeFailed)
    assert "failed on node(s) [1]" in str(error)
    assert "out of memory on node 1" in str(error) and "exit 1" in str(error)
    assert any("stop-run r1" in c for c in member.commands)
    _no_torchrun_left(cluster["root"])


def test_a_lost_node_fails_the_run_and_says_so(cluster: dict) -> None:
    thread, result = _start(cluster, [])
    FakeMember.made[0].gone = True
    thread.join(30)
    assert "Node 1: its Jupyter stopped answering" in str(result["error"])
    _no_torchrun_left(cluster["root"])


def test_a_run_past_its_timeout_is_stopped(cluster: dict) -> None:
    thread, result = _start(cluster, [], timeout=0.5)
    thread.join(30)
    assert "not done after 0.5 s" in str(result["error"])
    assert "Still running: nodes [0, 1]" in str(result["error"])
    _no_torchrun_left(cluster["root"])


def _no_torchrun_left(root: Path) -> None:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert f"{root}/bin/torchrun" not in ps.stdout


def _wait(condition, timeout: float = 20) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_stop_run_stops_that_runs_agents_only() -> None:
    sleeper = "import time; time.sleep(60)"
    ours = subprocess.Popen([sys.executable, "-c", sleeper, "--rdzv-id", "run-a"])
    other = subprocess.Popen([sys.executable, "-c", sleeper, "--rdzv-id", "run-b"])
    try:
        stopped = subprocess.run(
            [sys.executable, "-m", "transfer_learning", "stop-run", "run-a"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert stopped.stdout.strip() == "1"
        assert ours.wait(10) == -15
        assert other.poll() is None
    finally:
        for proc in (ours, other):
            proc.kill()
            proc.wait()


def test_a_failed_prepare_on_a_node_is_in_its_log(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(nodes, "WORKSPACE", tmp_path)
    log, rc = tmp_path / "node-1.log", tmp_path / "node-1.rc"
    prepare = [sys.executable, "-c", "import sys; sys.exit('no space left for the data set')"]
    subprocess.run(
        ["sh", "-c", nodes._shell_line(["true"], str(log), str(rc), prepare)], check=True
    )
    _wait(lambda: rc.exists() and rc.read_text().strip())
    assert rc.read_text().strip() == "1"
    assert "no space left for the data set" in log.read_text()


def test_a_failed_prepare_on_node_0_stops_the_others_and_says_why(cluster: dict) -> None:
    prepare = [sys.executable, "-c", "import sys; sys.exit('disk full')"]
    with pytest.raises(nodes.NodeFailed, match=r"(?s)node 0's prepare step .*disk full"):
        nodes.run_on_nodes(TRAIN, "r1", env=cluster["env"], prepare=prepare, poll=0.05)
    (member,) = FakeMember.made
    assert any("stop-run r1" in c for c in member.commands)


def _peers_folder(tmp_path: Path, count: int = 3) -> Path:
    folder = tmp_path / "peers"
    folder.mkdir()
    (folder / "torchrun.json").write_text(json.dumps(node_filters.torchrun_templates(count)))
    table = [
        {"rank": i, "host": f"node-00{i}", "user": "ubuntu", "port": 8887 + i}
        for i in range(1, count)
    ]
    (folder / "nodes.json").write_text(json.dumps(table))
    for i in range(1, count):
        (folder / f"token-{i}").write_text(f"token-of-{i}\n")
    return folder


def test_an_aws_node_zero_reaches_each_node_through_its_own_forward_and_token(
    tmp_path: Path, monkeypatch
) -> None:
    folder = _peers_folder(tmp_path)
    opened: list[tuple[int, int]] = []
    closed: list[int] = []

    import contextlib

    @contextlib.contextmanager
    def fake_tunnel(where: Path, node: dict):
        assert where == folder
        opened.append((node["rank"], node["port"]))
        yield 40000 + node["rank"]
        closed.append(node["rank"])

    monkeypatch.setattr(nodes, "tunnel", fake_tunnel)
    env = {nodes.PEERS_ENV: str(folder)}
    lines = nodes.node_lines("r1", TRAIN, env)
    assert lines == nodes.node_lines("r1", TRAIN, _env(3))  # the same lines as the local target
    with nodes.members(lines, env) as found:
        assert opened == [(1, 8888), (2, 8889)] and not closed
        assert {i: (m.address, m.port) for i, m in found.items()} == {
            1: ("127.0.0.1", 40001),
            2: ("127.0.0.1", 40002),
        }
        assert found[2]._headers["Authorization"] == "token token-of-2"
    assert sorted(closed) == [1, 2]  # every forward closed after the run


def test_an_aws_peers_folder_that_lacks_a_node_or_a_file_names_the_fix(tmp_path: Path) -> None:
    folder = _peers_folder(tmp_path, 2)
    env = {nodes.PEERS_ENV: str(folder)}
    lines = nodes.node_lines(
        "r1", TRAIN, {nodes.ENV: json.dumps(node_filters.torchrun_templates(3))}
    )
    with (
        pytest.raises(WorkloadError, match=r"nodes.json names no node \[2\].*workbench_nodes=3"),
        nodes.members(lines, env),
    ):
        pass
    (folder / "torchrun.json").unlink()
    with pytest.raises(WorkloadError, match=r"WYVERN_PEERS: cannot read .*torchrun.json"):
        nodes.node_lines("r1", TRAIN, env)


def test_the_forward_s_ssh_trusts_only_the_recorded_host_keys_and_the_peer_key() -> None:
    argv = nodes.tunnel_argv(
        Path("/run/wyvern/peers"), {"host": "node-001", "user": "u", "port": 8890}, 4321
    )
    assert argv[:2] == ["ssh", "-N"] and argv[-1] == "u@node-001"
    options = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    assert "StrictHostKeyChecking=yes" in options and "BatchMode=yes" in options
    assert "UserKnownHostsFile=/run/wyvern/peers/known_hosts" in options
    assert "ExitOnForwardFailure=yes" in options and "IdentitiesOnly=yes" in options
    assert argv[argv.index("-L") + 1] == "127.0.0.1:4321:127.0.0.1:8890"
    assert argv[argv.index("-i") + 1] == "/run/wyvern/peers/id_ed25519"
