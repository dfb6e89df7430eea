"""transfer_learning.nodes.tunnel against a real OpenSSH server: the SSH forward node 0's
notebook reaches another aws node's Jupyter through, with a key that server accepts for that
one forward only (the options tasks/peers.yml of the notebook role writes)."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from transfer_learning import nodes

from tests.support.ports import reserved_port
from tests.support.sshd import ssh_server

pytestmark = pytest.mark.skipif(
    not Path("/usr/sbin/sshd").exists(), reason="needs sshd (make test-deps)"
)


class _Jupyter(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"version": "stand-in", "host": self.headers.get("Host")}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def jupyter() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Jupyter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture
def peers(tmp_path: Path, jupyter: int) -> Iterator[dict]:
    """Node 0's peers folder and a node whose sshd accepts its key for the forward to
    `jupyter` alone."""
    folder = tmp_path / "peers"
    folder.mkdir()
    key = folder / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    authorized = tmp_path / "authorized_keys"
    public = key.with_suffix(".pub").read_text().strip()
    authorized.write_text(
        f'restrict,port-forwarding,permitopen="127.0.0.1:{jupyter}",command="/bin/false" {public}\n'
    )
    with reserved_port() as other, ssh_server(tmp_path / "sshd", authorized) as server:
        (folder / "known_hosts").write_text(f"[127.0.0.1]:{server.port} {server.host_key}\n")
        node = {
            "rank": 1,
            "host": "127.0.0.1",
            "user": server.user,
            "port": jupyter,
            "ssh_port": server.port,
        }
        yield {"folder": folder, "node": node, "server": server, "other": other}


def test_the_forward_reaches_the_node_s_jupyter_and_closes_after(peers: dict) -> None:
    with nodes.tunnel(peers["folder"], peers["node"]) as port:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=10) as answer:
            assert json.loads(answer.read())["version"] == "stand-in"
        # A Member speaks to it as to a loopback Jupyter.
        member = nodes.Member("127.0.0.1", "t0ken", port=port)
        assert member.request("GET", "/api")["host"] == f"localhost:{port}"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=5)


def test_an_unknown_host_key_is_refused_with_what_ssh_said(peers: dict) -> None:
    (peers["folder"] / "known_hosts").write_text(
        f"[127.0.0.1]:{peers['server'].port} ssh-ed25519 "
        "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
    )
    with (
        pytest.raises(
            nodes.NodeFailed,
            match=r"(?s)node 1 .* SSH forward .* failed .*Host key verification failed",
        ),
        nodes.tunnel(peers["folder"], peers["node"]),
    ):
        pass


def test_the_key_opens_no_other_port_and_no_shell(peers: dict) -> None:
    folder, node, server = peers["folder"], peers["node"], peers["server"]
    elsewhere = {**node, "port": peers["other"]}
    # ssh listens, but the server refuses to open the channel: nothing answers.
    with nodes.tunnel(folder, elsewhere) as port, pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=5)
    argv = nodes.tunnel_argv(folder, node, 1)
    ssh = [a for a in argv if a not in ("-N",)]
    ssh = ssh[: ssh.index("-L")] + ssh[ssh.index("-L") + 2 :]
    shell = subprocess.run([*ssh, "echo", "opened"], capture_output=True, text=True, timeout=30)
    assert shell.returncode != 0 and "opened" not in shell.stdout
    assert server.port  # the same server answered both
