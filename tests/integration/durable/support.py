"""A fake IMDSv2 on loopback, and the durable agent loaded from the role's files."""

from __future__ import annotations

import importlib.util
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parents[3]
AGENT = ROOT / "roles/durable_outputs/files/wyvern_durable.py"


def load_agent(path: Path = AGENT, name: str = "wyvern_durable"):
    """A host script (standard library, no package) loaded as a module."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Static keys for signing tests (never a real account).
CREDS = {"access_key": "AKIDEXAMPLE", "secret_key": "wJalrXUtnFEMI/K7MDENG", "token": "tok/en+="}


def botocore_authorization(
    method: str, url: str, body: bytes, headers: dict[str, str], service: str, region: str, when
) -> str:
    """The Authorization header botocore's SigV4 signer (S3's for s3) gives this request."""
    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    request.context["payload_signing_enabled"] = True
    signer_class = botocore.auth.S3SigV4Auth if service == "s3" else botocore.auth.SigV4Auth
    signer = signer_class(
        Credentials(CREDS["access_key"], CREDS["secret_key"], CREDS["token"]), service, region
    )
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=when):
        signer.add_auth(request)
    return request.headers["Authorization"]


class FakeImds:
    """IMDSv2 as EC2 serves it: PUT a token (TTL honoured), GETs need a live token (401
    otherwise), 404 where there is no notice. `down()` closes the port."""

    def __init__(self) -> None:
        self.tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self.token_puts = 0
        self.unauthorized = 0
        self.paths: dict[str, str] = {
            "/latest/meta-data/iam/security-credentials/": "wyvern-workbench-tester\n",
            "/latest/meta-data/iam/security-credentials/wyvern-workbench-tester": json.dumps(
                {
                    "Code": "Success",
                    "AccessKeyId": "ASIAFAKEKEY",
                    "SecretAccessKey": "fake-secret",
                    "Token": "fake-session-token",
                    "Expiration": time.strftime(
                        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600)
                    ),
                }
            ),
        }
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: str = "") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:
                if self.path != "/latest/api/token":
                    return self._send(404)
                ttl = int(self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "0"))
                if not 1 <= ttl <= 21600:
                    return self._send(400)
                token = secrets.token_urlsafe(16)
                fake.tokens[token] = time.monotonic() + ttl
                fake.token_puts += 1
                return self._send(200, token)

            def do_GET(self) -> None:
                token = self.headers.get("X-aws-ec2-metadata-token", "")
                if fake.tokens.get(token, 0) <= time.monotonic():
                    fake.unauthorized += 1
                    return self._send(401)
                if self.path in fake.paths:
                    return self._send(200, fake.paths[self.path])
                return self._send(404)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def notice(self, action: str = "terminate") -> None:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 120))
        self.paths["/latest/meta-data/spot/instance-action"] = json.dumps(
            {"action": action, "time": when}
        )

    def rebalance(self) -> None:
        self.paths["/latest/meta-data/events/recommendations/rebalance"] = json.dumps(
            {"noticeTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        )

    def forget_tokens(self) -> None:
        """As after an IMDS restart: every issued token is refused."""
        self.tokens.clear()

    def down(self) -> None:
        self.server.shutdown()
        self.server.server_close()
