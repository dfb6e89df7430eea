"""A distributed run started from node 0's notebook, on the same torchrun lines as
playbooks/run.yml -e run_nodes=N.

A workbench of several nodes (site.yml -e workbench_nodes=N) gives node 0's container every
node's torchrun line in WYVERN_TORCHRUN (the collection's filter `torchrun_templates` owns
them: c10d rendezvous hosted by node 0, `--local-addr node-<i>`, bounded join), with the run
id and the workers' command left to fill in. `run_on_nodes` fills them in, starts node i's
line on node i through that node's own Jupyter server (a terminal, with the workbench's
token, on the nodes' bridge), runs node 0's line here, prints rank 0's log as it grows,
and watches every node: a node whose torchrun fails stops the run on all nodes and raises
with that node's log. Each node's torchrun writes outputs/<run_id>/node-<i>.log (and
node-<i>.rc when it ends); only rank 0 writes the run's outputs.

    from transfer_learning.nodes import run_on_nodes
    metrics = run_on_nodes(["--data", "/workspace/data/digits", "--epochs", "1"], "my-run",
                           prepare=["python", "-m", "transfer_learning", "make-dataset",
                                    "digits", "/workspace/data/digits"])

On a workbench of several aws instances (site.yml -e workbench_target=aws -e
workbench_nodes=N) every node's Jupyter listens on its instance's loopback only, and node 0's
container gets WYVERN_PEERS instead: a read-only folder (role notebook, tasks/peers.yml)
with the lines (torchrun.json), the other nodes' SSH user and Jupyter port (nodes.json),
their tokens (token-<i>), a key they accept for one thing only, forwarding a port to their
own Jupyter (id_ed25519), and their host keys (known_hosts). `run_on_nodes` then reaches
node i through an SSH forward to that port (`tunnel`), opened for the run and closed after.

Stopping the run (`stop_run`): SIGTERM to the node's torchrun agents of that run id (they
stop their workers), the rule `python -m transfer_learning stop-run <run id>` applies for
the run role too.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from transfer_learning.errors import WorkloadError

ENV = "WYVERN_TORCHRUN"
# Node 0 of several aws instances: the folder that says how to reach the other nodes.
PEERS_ENV = "WYVERN_PEERS"
RUN_ID_FIELD = "{run_id}"
COMMAND_FIELD = "{command}"
# Jupyter's port inside every node's container (the image's CMD).
JUPYTER_PORT = 8888
WORKSPACE = Path("/workspace")
OUTPUTS = "outputs"
LOG_TAIL = 40
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class NodeFailed(WorkloadError):
    """A node's torchrun failed, could not start, or the run ran past its timeout."""

    exit_code = 1


def node_lines(
    run_id: str, command: Sequence[str], env: Mapping[str, str] | None = None
) -> list[list[str]]:
    """Each node's torchrun argv for this run: WYVERN_TORCHRUN's lines (or those of
    WYVERN_PEERS' torchrun.json), filled in."""
    env = os.environ if env is None else env
    raw = env.get(ENV)
    if not raw and env.get(PEERS_ENV):
        raw = _peer_file(env[PEERS_ENV], "torchrun.json")
    if not raw:
        raise WorkloadError(
            f"{ENV} is not set: this is not node 0 of a workbench of several nodes; start one "
            "with `ansible-playbook site.yml -e workbench_nodes=N` and run this in node 0's "
            "notebook"
        )
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise WorkloadError(
            f"run_id {run_id!r}: give a name of letters, digits, '.', '_' and '-' (up to 128, "
            "starting with a letter or digit); it names the run's folder and its rendezvous"
        )
    worker = [str(part) for part in command]
    if not worker:
        raise WorkloadError("command: give the arguments of `transfer_learning train`")
    if worker[:3] != ["-m", "transfer_learning", "train"]:
        worker = ["-m", "transfer_learning", "train", *worker]
    lines = []
    for template in json.loads(raw):
        if not template or template[-1] != COMMAND_FIELD or RUN_ID_FIELD not in template:
            raise WorkloadError(f"{ENV} holds a line this package cannot fill in: {template!r}")
        line = [run_id if part == RUN_ID_FIELD else part for part in template[:-1]]
        lines.append(line + worker)
    return lines


def _peer_file(folder: str, name: str) -> str:
    path = Path(folder) / name
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkloadError(
            f"{PEERS_ENV}: cannot read {path} ({exc.strerror}); configure the workbench's nodes "
            "again with `ansible-playbook site.yml -e workbench_target=aws -e workbench_nodes=N`"
        ) from None


def tunnel_argv(folder: Path, node: Mapping[str, Any], local_port: int) -> list[str]:
    """The ssh command that forwards 127.0.0.1:`local_port` here to node's Jupyter on its own
    loopback, with the workbench's peer key and the nodes' recorded host keys only."""
    return [
        "ssh",
        "-N",
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={folder / 'known_hosts'}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "UpdateHostKeys=no",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        "ConnectTimeout=15",
        "-o",
        "ServerAliveInterval=15",
        "-o",
        "ServerAliveCountMax=4",
        "-i",
        str(folder / "id_ed25519"),
        "-p",
        str(int(node.get("ssh_port", 22))),
        "-L",
        f"127.0.0.1:{local_port}:127.0.0.1:{int(node['port'])}",
        f"{node['user']}@{node['host']}",
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def tunnel(folder: Path, node: Mapping[str, Any], timeout: float = 30) -> Iterator[int]:
    """An SSH forward to `node`'s Jupyter for as long as the context lasts; yields the local
    port. An ssh that exits, or a forward that does not listen in `timeout`, raises
    NodeFailed with what ssh said."""
    with tempfile.TemporaryFile() as errors:
        port = _free_port()
        proc = subprocess.Popen(
            tunnel_argv(folder, node, port),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )

        def said() -> str:
            errors.seek(0)
            return errors.read().decode(errors="replace").strip()[-2000:] or "(nothing)"

        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise NodeFailed(
                        f"node {node.get('rank')} ({node['host']}): the SSH forward to its "
                        f"Jupyter failed (ssh exit {proc.returncode}): {said()}"
                    )
                with socket.socket() as sock:
                    if sock.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if time.monotonic() > deadline:
                    raise NodeFailed(
                        f"node {node.get('rank')} ({node['host']}): the SSH forward to its "
                        f"Jupyter did not open within {timeout:g} s: {said()}"
                    )
                time.sleep(0.1)
            yield port
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@contextmanager
def members(lines: Sequence[Sequence[str]], env: Mapping[str, str]) -> Iterator[dict[int, Member]]:
    """Nodes 1..N-1 of the run's lines, each as its Jupyter server: on the nodes' bridge
    (local target) at its `--local-addr`, or through an SSH forward (WYVERN_PEERS)."""
    folder = env.get(PEERS_ENV)
    if not folder:
        token_file = env.get("JUPYTER_TOKEN_FILE")
        if not token_file or not os.path.exists(token_file):
            raise WorkloadError(
                "JUPYTER_TOKEN_FILE: no token file, so the other nodes cannot be asked"
            )
        token = Path(token_file).read_text(encoding="utf-8").strip()
        yield {i: Member(local_addr(line), token) for i, line in enumerate(lines) if i}
        return
    table = {int(node["rank"]): node for node in json.loads(_peer_file(folder, "nodes.json"))}
    missing = sorted(set(range(1, len(lines))) - set(table))
    if missing:
        raise WorkloadError(
            f"{PEERS_ENV}: nodes.json names no node {missing}; configure the workbench's nodes "
            "again with `ansible-playbook site.yml -e workbench_target=aws -e workbench_nodes="
            f"{len(lines)}`"
        )
    with ExitStack() as stack:
        found = {}
        for i in range(1, len(lines)):
            token = _peer_file(folder, f"token-{i}").strip()
            port = stack.enter_context(tunnel(Path(folder), table[i]))
            found[i] = Member("127.0.0.1", token, port=port)
        yield found


def local_addr(line: Sequence[str]) -> str:
    """The address a node's line names it by (`--local-addr`): where its Jupyter answers."""
    return line[list(line).index("--local-addr") + 1]


def stop_run(run_id: str) -> int:
    """SIGTERM to this container's torchrun agents of `run_id` (found by `--rdzv-id`); they
    stop their workers. Returns how many were signalled."""
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--rdzv-id" in argv and run_id.encode() in argv:
            try:
                os.kill(int(entry.name), signal.SIGTERM)
                count += 1
            except ProcessLookupError:
                pass
    return count


class Member:
    """Node i's Jupyter server, reached from node 0 with the workbench's token.

    Jupyter refuses a Host header that is not a loopback name (its defence against DNS
    rebinding from browsers); a member speaks to it with `Host: localhost`, as nodes on
    the workbench's own bridge are not browsers."""

    def __init__(self, address: str, token: str, port: int = JUPYTER_PORT, timeout: float = 20):
        self.address, self.port, self.timeout = address, port, timeout
        self._headers = {"Authorization": f"token {token}", "Host": f"localhost:{port}"}

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://{self.address}:{self.port}{path}",
            data=data,
            method=method,
            headers={**self._headers, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as response:
            text = response.read()
        return json.loads(text) if text else None

    def read(self, path: str) -> str | None:
        """A text file under /workspace on that node, or None when it does not exist."""
        quoted = urllib.parse.quote(path)
        try:
            model = self.request("GET", f"/api/contents/{quoted}?type=file&format=text&content=1")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return model.get("content")

    def shell(self, command: str) -> None:
        """Runs `command` in a terminal of that node's Jupyter and waits until the shell has
        read it (a marker it prints after), then closes the terminal. A command that must
        outlive the terminal is started detached (setsid) by the caller."""
        import websocket  # websocket-client, in the image with Jupyter

        name = self.request("POST", "/api/terminals")["name"]
        nonce = secrets.token_hex(6)
        try:
            ws = websocket.create_connection(
                f"ws://{self.address}:{self.port}/terminals/websocket/{name}",
                header=[f"{k}: {v}" for k, v in self._headers.items() if k != "Host"],
                host=self._headers["Host"],
                suppress_origin=True,
                timeout=self.timeout,
            )
            try:
                # The marker is printed by the shell, not echoed as typed: the quotes split it.
                # Two lines, so that a command ending in `&` stays valid.
                marker = f"echo 'wyvern-'\"done-{nonce}\""
                ws.send(json.dumps(["stdin", f"{command}\r{marker}\r"]))
                seen = ""
                while f"wyvern-done-{nonce}" not in seen:
                    try:
                        message = json.loads(ws.recv())
                    except websocket.WebSocketTimeoutException:
                        raise NodeFailed(
                            f"node {self.address}: its shell did not answer within "
                            f"{self.timeout:g} s; it printed: {seen[-2000:]!r}"
                        ) from None
                    if message and message[0] == "stdout":
                        seen += message[1]
            finally:
                ws.close()
        finally:
            self.request("DELETE", f"/api/terminals/{name}")


def _shell_line(line: Sequence[str], log: str, rc: str, prepare: Sequence[str] | None) -> str:
    steps = [shlex.join(prepare)] if prepare else []
    steps.append(shlex.join(line))
    # The log holds what `prepare` said too: a node that fails there shows why.
    inner = f"({' && '.join(steps)}) > {shlex.quote(log)} 2>&1; echo $? > {shlex.quote(rc)}"
    # A terminal's login shell resets PATH; the nodes share the image, so node 0's PATH holds.
    path = shlex.quote(os.environ.get("PATH", os.defpath))
    return (
        f"cd {WORKSPACE} && PATH={path} setsid sh -c {shlex.quote(inner)} "
        "< /dev/null > /dev/null 2>&1 &"
    )


def _read_or_none(member: Member, path: str) -> str | None:
    try:
        return member.read(path)
    except (OSError, urllib.error.URLError):
        return None


def _tail(text: str | None) -> str:
    lines = (text or "(no log)").rstrip().splitlines()
    return "\n".join(lines[-LOG_TAIL:])


def run_on_nodes(
    command: Sequence[str],
    run_id: str,
    *,
    prepare: Sequence[str] | None = None,
    timeout: float | None = None,
    poll: float = 1.0,
    show: Callable[[str], None] = print,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Train one run across the workbench's nodes (see the module's text) and return rank
    0's metrics.json. `command`: the arguments of `transfer_learning train` (its
    `--output-dir` and `--run-id` are this function's); `prepare`: an argv every node runs
    first (make the data set); `timeout`: seconds for the whole run (None: no limit)."""
    env = os.environ if env is None else env
    worker = [str(part) for part in command]
    if "--output-dir" in worker or "--run-id" in worker:
        raise WorkloadError("command: leave --output-dir and --run-id to run_on_nodes")
    worker += ["--output-dir", str(WORKSPACE / OUTPUTS), "--run-id", run_id]
    lines = node_lines(run_id, worker, env)
    with members(lines, env) as found:
        return _run(lines, found, run_id, prepare, timeout, poll, show)


def _run(
    lines: list[list[str]],
    members: dict[int, Member],
    run_id: str,
    prepare: Sequence[str] | None,
    timeout: float | None,
    poll: float,
    show: Callable[[str], None],
) -> dict[str, Any]:
    run_dir = WORKSPACE / OUTPUTS / run_id
    run_dir.mkdir(parents=True, exist_ok=True)

    def paths(i: int) -> tuple[str, str]:
        return (f"{OUTPUTS}/{run_id}/node-{i}.log", f"{OUTPUTS}/{run_id}/node-{i}.rc")

    for path in paths(0):  # an earlier execution's ends are not this one's (the others'
        (WORKSPACE / path).unlink(missing_ok=True)  # go in their start command)
    started: list[int] = []
    proc: subprocess.Popen[bytes] | None = None

    def stop_all() -> None:
        stop_run(run_id)
        for i in started:
            try:
                members[i].shell(
                    f"{shlex.quote(sys.executable)} -m transfer_learning stop-run {shlex.quote(run_id)}"
                )
            except Exception as exc:
                show(f"node {i}: could not stop its part of the run: {exc}")

    try:
        for i, member in members.items():
            log, rc = (str(WORKSPACE / p) for p in paths(i))
            member.shell(
                f"mkdir -p {shlex.quote(str(run_dir))} && rm -f {shlex.quote(log)} "
                f"{shlex.quote(rc)} && {_shell_line(lines[i], log, rc, prepare)}"
            )
            started.append(i)
        if prepare:
            made = subprocess.run(list(prepare), cwd=WORKSPACE, capture_output=True, text=True)
            if made.returncode:
                raise NodeFailed(
                    f"run {run_id}: node 0's prepare step {shlex.join(prepare)} failed "
                    f"(exit {made.returncode}):\n{_tail(made.stdout + made.stderr)}"
                )
        log0 = WORKSPACE / paths(0)[0]
        with open(log0, "wb") as sink:
            proc = subprocess.Popen(lines[0], stdout=sink, stderr=subprocess.STDOUT, cwd=WORKSPACE)
        show(f"run {run_id}: torchrun on {len(lines)} node(s); node 0's log is {log0}")
        shown = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        ends: dict[int, int] = {}
        while True:
            text = log0.read_text(encoding="utf-8", errors="replace")
            for line in text[shown:].splitlines(keepends=True):
                if not line.endswith("\n"):
                    break
                show(line.rstrip("\n"))
                shown += len(line)
            code = proc.poll()
            if code is not None:
                ends[0] = code
            lost: dict[int, str] = {}
            for i, member in members.items():
                if i not in ends:
                    try:
                        found = member.read(paths(i)[1])
                    except (OSError, urllib.error.URLError) as exc:
                        lost[i] = f"its Jupyter stopped answering ({exc}): is its container up?"
                        continue
                    if found and found.strip():
                        ends[i] = int(found.strip())
            failed = sorted(i for i, code in ends.items() if code != 0)
            if failed or lost:
                raise NodeFailed(
                    f"run {run_id} failed on node(s) {sorted({*failed, *lost})} and was stopped "
                    "on every node.\n"
                    + "\n".join(
                        f"Node {i}: {lost[i]}"
                        if i in lost
                        else f"Node {i}'s torchrun ended with exit {ends[i]}; its log "
                        f"({WORKSPACE / paths(i)[0]} on node {i}) ends:\n"
                        + _tail(text if i == 0 else _read_or_none(members[i], paths(i)[0]))
                        for i in sorted({*failed, *lost})
                    )
                )
            if len(ends) == len(lines):
                break
            if deadline is not None and time.monotonic() > deadline:
                raise NodeFailed(
                    f"run {run_id}: not done after {timeout:g} s; stopped on every node. "
                    f"Still running: nodes {sorted(set(range(len(lines))) - set(ends))}"
                )
            time.sleep(poll)
    except BaseException:
        stop_all()
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise
    return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
