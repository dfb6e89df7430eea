"""A real OpenSSH server on loopback that stands in for an EC2 instance in e2e tests."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import reserved_port

SSHD = "/usr/sbin/sshd"

# sudo for a stand-in whose login user is root: drop sudo's options, run the command.
SUDO_SHIM = """#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    -u|-g|-p|-C|-D|-r|-t|-U|-h) shift 2 ;;
    --) shift; break ;;
    -*) shift ;;
    *) break ;;
  esac
done
exec "$@"
"""


@dataclass
class SshServer:
    host: str
    port: int
    user: str
    log: Path
    host_key: str  # the public host key, "ssh-ed25519 AAAA..."
    authorized_keys: Path  # sshd reads it at each login, so a test may write it later


def _wait_for_port(
    port: int, proc: subprocess.Popen, timeout: float = 20, address: str = "127.0.0.1"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex((address, port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"sshd did not listen on {address}:{port}")


def host_key_from_user_data(user_data: str) -> str:
    """The private ed25519 host key that cloud-init would install from ``user_data``."""
    import yaml

    config = yaml.safe_load(user_data)
    return config["ssh_keys"]["ed25519_private"]


@contextmanager
def ssh_server(
    workdir: Path,
    authorized_key: Path,
    host_private_key: str | None = None,
    port: int | None = None,
    address: str = "127.0.0.1",
    sudo: bool = False,
    also: tuple[str, ...] = (),
    peer_keys: Path | None = None,
) -> Iterator[SshServer]:
    """Run sshd on a loopback port, accepting only ``authorized_key`` for this user.

    ``host_private_key`` (OpenSSH format) is the server's ed25519 host key, as cloud-init
    installs it from an instance's user data; without it the server makes its own.
    ``sudo`` puts a ``sudo`` on the sessions' PATH, as an instance has (rsync runs
    ``sudo -u root rsync`` there); the login user is root already, so it runs the command.
    ``also``: more addresses to listen at (same port). ``peer_keys``: a second authorized
    keys file (a role writes it, where an instance's is the login user's own).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    host_key = workdir / "ssh_host_ed25519_key"
    if host_private_key is not None:
        host_key.write_text(host_private_key.rstrip("\n") + "\n")
        host_key.chmod(0o600)
        derived = subprocess.run(
            ["ssh-keygen", "-y", "-f", str(host_key)], check=True, capture_output=True, text=True
        ).stdout
        host_key.with_suffix(".pub").write_text(derived)
    elif not host_key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True
        )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    with ExitStack() as stack:
        # A reserved port, held while the server runs, unless the caller chose one.
        port = port or stack.enter_context(reserved_port())
        yield from _serve(workdir, authorized_key, host_key, port, address, sudo, also, peer_keys)


def _serve(
    workdir: Path,
    authorized_key: Path,
    host_key: Path,
    port: int,
    address: str,
    sudo: bool,
    also: tuple[str, ...] = (),
    peer_keys: Path | None = None,
) -> Iterator[SshServer]:
    log = workdir / "sshd.log"
    config = workdir / "sshd_config"
    session_env = ""
    if sudo:
        bindir = workdir / "bin"
        bindir.mkdir(exist_ok=True)
        (bindir / "sudo").write_text(SUDO_SHIM)
        (bindir / "sudo").chmod(0o755)
        session_env = (
            f"SetEnv PATH={bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        )
    listen = "\n".join(f"ListenAddress {a}" for a in (address, *also))
    config.write_text(
        f"""Port {port}
{listen}
HostKey {host_key}
PidFile {workdir / "sshd.pid"}
AuthorizedKeysFile {authorized_key}{f" {peer_keys}" if peer_keys else ""}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
AllowTcpForwarding yes
Subsystem sftp internal-sftp
{session_env}"""
    )
    # The log goes to a file (never an unread pipe, which blocks the server once full).
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )
    try:
        _wait_for_port(port, proc, address=address)
        public = " ".join(host_key.with_suffix(".pub").read_text().split()[:2])
        user = pwd.getpwuid(os.getuid()).pw_name
        yield SshServer(address, port, user, log, public, authorized_key)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def address_on_loopback(address: str) -> Iterator[None]:
    """Make ``address`` local (a /32 on ``lo``) while the context lasts.

    A stand-in instance then answers at the very address EC2 gave the instance, on port 22,
    so everything that connects (Ansible, rsync, ssh, the tunnel) finds it as a user's tools
    find a real one: through the inventory, with no override. Needs CAP_NET_ADMIN.
    """
    added = subprocess.run(
        ["ip", "address", "add", f"{address}/32", "dev", "lo"], capture_output=True, text=True
    )
    if added.returncode != 0 and "File exists" not in added.stderr:
        raise RuntimeError(f"cannot put {address} on lo: {added.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["ip", "address", "del", f"{address}/32", "dev", "lo"], check=False)


class StandInInstance:
    """Stands in for the EC2 instance that moto "launches", following its life as it would run.

    A thread watches the instance tagged ``workbench:name=<name>``: when it runs with a public
    address, sshd starts at that address on port 22 with the host key cloud-init would
    install from the user data; when it stops, sshd goes away; when it starts again at
    another address (EC2 gives a stopped instance a new one), sshd comes back there.
    ``boots`` lists the addresses it booted at, in order.

    ``node``: the instance of that rank (tag ``workbench:node``) of a workbench of several;
    its private address is put on the loopback as well, where the other nodes reach it
    (each node's notebook container is on the host's network), and sshd listens there too.
    ``peer_keys``: the file the notebook role authorizes node 0's forward-only key in
    (notebook_peers_authorized_keys), read by sshd besides ``authorized_key``. The stand-ins of one
    workbench share this machine's Docker engine, as the nodes' containers, named by rank,
    can.
    """

    def __init__(
        self,
        ec2,
        name: str,
        workdir: Path,
        authorized_key: Path,
        node: int | None = None,
        peer_keys: Path | None = None,
    ) -> None:
        self.peer_keys = peer_keys
        self.ec2 = ec2
        self.name = name
        self.node = node
        self.workdir = workdir
        self.authorized_key = authorized_key
        self.server: SshServer | None = None
        self.error: BaseException | None = None
        self.boots: list[str] = []
        self.ready = threading.Event()
        self._boot_stack: ExitStack | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def _find(self) -> dict | None:
        filters = [
            {"Name": "tag:workbench:name", "Values": [self.name]},
            {
                "Name": "instance-state-name",
                "Values": ["pending", "running", "stopping", "stopped"],
            },
        ]
        if self.node is not None:
            filters.append({"Name": "tag:workbench:node", "Values": [str(self.node)]})
        reservations = self.ec2.describe_instances(Filters=filters)["Reservations"]
        instances = [i for r in reservations for i in r["Instances"]]
        return instances[0] if instances else None

    def _power_off(self) -> None:
        if self._boot_stack is not None:
            self._boot_stack.close()
        self._boot_stack, self.server = None, None

    def _boot(self, instance: dict) -> None:
        import base64

        data = self.ec2.describe_instance_attribute(
            InstanceId=instance["InstanceId"], Attribute="userData"
        )["UserData"]["Value"]
        host_key = host_key_from_user_data(base64.b64decode(data).decode())
        address = instance["PublicIpAddress"]
        stack = ExitStack()
        also: tuple[str, ...] = ()
        try:
            stack.enter_context(address_on_loopback(address))
            if self.node is not None:
                also = (instance["PrivateIpAddress"],)
                stack.enter_context(address_on_loopback(also[0]))
            self.server = stack.enter_context(
                ssh_server(
                    self.workdir,
                    self.authorized_key,
                    host_key,
                    port=22,
                    address=address,
                    sudo=True,
                    also=also,
                    peer_keys=self.peer_keys,
                )
            )
        except BaseException:
            stack.close()
            raise
        self._boot_stack = stack
        self.boots.append(address)

    def _follow(self) -> None:
        try:
            while not self._stop.is_set():
                instance = self._find()
                running = instance is not None and instance["State"]["Name"] == "running"
                address = instance.get("PublicIpAddress") if running else None
                if self.server is not None and self.server.host != address:
                    self._power_off()
                if address and self.server is None:
                    self._boot(instance)
                    self.ready.set()
                self._stop.wait(0.3)
        except BaseException as exc:  # reported to the test, which asserts on it
            self.error = exc
        finally:
            self.ready.set()

    def __enter__(self) -> StandInInstance:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._power_off()
