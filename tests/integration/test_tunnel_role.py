"""playbooks/tunnel.yml (role tunnel) against a real sshd on loopback standing in for the
instance, and a small HTTP server standing in for Jupyter behind it: the tunnel opens, a
second run changes nothing, absent closes it, and a socket whose master died is cleared
(as teardown.yml does after the instance is gone). Seconds; no AWS, no image.
"""

from __future__ import annotations

import http.server
import json
import secrets
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.playbook import run_playbook
from tests.support.ports import reserved_port
from tests.support.sshd import ssh_server


class _Jupyter(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"version": "2.99-standin"}).encode()
        self.send_response(200 if self.path == "/api" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def jupyter_port() -> Iterator[int]:
    with reserved_port() as port:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Jupyter)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield port
        finally:
            server.shutdown()
            server.server_close()


def test_tunnel_opens_once_closes_and_clears_a_stale_socket(
    repo_root: Path, ansible_env, tmp_path: Path, jupyter_port: int
) -> None:
    name = f"wb-tun-{secrets.token_hex(3)}"
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    # A short socket path: unix sockets have a ~100 byte limit, pytest's tmp paths are long.
    sockets = Path(tempfile.mkdtemp(prefix="wyvern-tun-"))
    control = sockets / f"{name}.ctl"
    with ssh_server(tmp_path / "sshd", Path(f"{key}.pub")) as sshd, reserved_port() as local:
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(f"[{sshd.host}]:{sshd.port} {sshd.host_key}\n")
        config = tmp_path / "ssh_config"
        config.write_text(
            f"Host {name}\n  HostName {sshd.host}\n  Port {sshd.port}\n  User {sshd.user}\n"
            f"  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known_hosts}\n"
            "  StrictHostKeyChecking yes\n  BatchMode yes\n"
        )
        settings = {
            "workbench_name": name,
            "tunnel_ssh_config": str(config),
            "tunnel_control_path": str(control),
            "tunnel_local_port": local,
            "tunnel_remote_port": jupyter_port,
        }
        try:
            up = run_playbook(repo_root, "playbooks/tunnel.yml", ansible_env, settings)
            assert up.rc == 0, up.tail()
            assert f"Jupyter 2.99-standin answers at http://127.0.0.1:{local}/lab" in up.output
            assert up.changed == 1 and control.exists()
            again = run_playbook(repo_root, "playbooks/tunnel.yml", ansible_env, settings)
            assert again.rc == 0 and again.changed == 0, again.tail()

            down = {**settings, "tunnel_state": "absent"}
            closed = run_playbook(repo_root, "playbooks/tunnel.yml", ansible_env, down)
            assert closed.rc == 0 and closed.changed >= 1, closed.tail()
            assert not control.exists()
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", local), timeout=2).close()
            quiet = run_playbook(repo_root, "playbooks/tunnel.yml", ansible_env, down)
            assert quiet.rc == 0 and quiet.changed == 0, quiet.tail()

            # A master that died with its instance leaves its socket: absent clears it.
            stale = socket.socket(socket.AF_UNIX)
            stale.bind(str(control))
            stale.close()
            cleared = run_playbook(repo_root, "playbooks/tunnel.yml", ansible_env, down)
            assert cleared.rc == 0 and cleared.changed >= 1, cleared.tail()
            assert not control.exists()
        finally:
            subprocess.run(
                ["ssh", "-F", str(config), "-S", str(control), "-O", "exit", name],
                capture_output=True,
                check=False,
            )
            control.unlink(missing_ok=True)
            sockets.rmdir()
