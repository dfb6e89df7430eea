"""A pip index URL with a credential reaches the image build but not the image (issue 11).

The role's own build tasks build the real Dockerfile with an extra index whose URL holds a
(fake) password. The index is a local HTTPS server on Docker's bridge gateway (pip ignores
plain-http indexes on other hosts), with a certificate made here and added to the CA bundle
the build gets (notebook_ca_bundle). It answers 404 to everything, so pip falls back to
PyPI, and records the basic-auth header pip sent, which proves the build used the setting. The image's history and configuration, and the
playbook's -v output, must not contain the password.

Slow: a changed pip.conf misses the build cache of the dependency layer (a full build).
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import secrets
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import docker
import pytest

from tests.support.cleanup import removing_new_dangling_images
from tests.support.locks import machine_lock
from tests.support.notebook_image import PLAYBOOK


def certificate(address: str, directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for an IP address (openssl), as cert and key files."""
    cert, key = directory / "index.crt", directory / "index.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", f"/CN={address}", "-addext", f"subjectAltName=IP:{address}"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@contextlib.contextmanager
def fake_index(address: str, cert: Path, key: Path) -> Iterator[tuple[int, list[str]]]:
    authorizations: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            authorizations.append(self.headers.get("Authorization") or "")
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((address, 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], authorizations
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_an_index_credential_is_used_by_the_build_and_kept_out_of_the_image(
    repo_root: Path,
    ansible_env: dict[str, str],
    docker_client,
    debian_base_image: str,
    tmp_path: Path,
) -> None:
    ipam = docker_client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    # The default bridge's gateway is the subnet's first address (docker0) when not listed.
    gateway = ipam.get("Gateway") or str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))
    password = f"fake-secret-{secrets.token_hex(8)}"
    tag = f"pipcred-{secrets.token_hex(4)}"
    image = f"wyvern/notebook:{tag}"
    cert, key = certificate(gateway, tmp_path)
    bundle = tmp_path / "ca-bundle.crt"
    bundle.write_text(Path("/etc/ssl/certs/ca-certificates.crt").read_text() + cert.read_text())
    with (
        machine_lock("notebook-image"),
        removing_new_dangling_images(docker_client),
        fake_index(gateway, cert, key) as (port, authorizations),
    ):
        url = f"https://wyvern:{password}@{gateway}:{port}/simple"
        proc = subprocess.run(
            [
                "ansible-playbook",
                "-v",
                str(PLAYBOOK),
                "-e",
                f"notebook_home={tmp_path / 'home'}",
                "-e",
                f"notebook_image_out={tmp_path / 'image'}",
                "-e",
                f"notebook_image_tag={tag}",
                "-e",
                f"notebook_ca_bundle={bundle}",
                "-e",
                f'{{"notebook_pip_extra_index_urls": ["{url}"]}}',
            ],
            cwd=repo_root,
            env=ansible_env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
    try:
        assert proc.returncode == 0, proc.stdout[-6000:]
        expected = "Basic " + base64.b64encode(f"wyvern:{password}".encode()).decode()
        assert expected in authorizations, "the build did not use the index setting"
        assert password not in proc.stdout + proc.stderr
        history = docker_client.api.history(image)
        inspect = docker_client.api.inspect_image(image)
        assert password not in repr(history) and password not in repr(inspect)
        assert f"{gateway}:{port}" not in repr(history) + repr(inspect)
        # Nor in the final image's files (pip.conf stays in the first stage).
        found = docker_client.containers.run(
            image,
            [
                "sh",
                "-c",
                f"ls -d /opt/wyvern-build 2>/dev/null; grep -rl {password} /opt /etc /home; true",
            ],
            remove=True,
            user="1000",
        ).decode()
        assert found.strip() == ""
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
            docker_client.images.remove(image)
