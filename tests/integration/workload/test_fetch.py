"""`fetch` against a loopback HTTP server: checksum, atomic extraction, resumed downloads."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from transfer_learning.cli import main


def _archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for split in ("train", "val"):
            for name in ("ants", "bees"):
                # Incompressible payload so the archive is big enough to cut in half.
                zf.writestr(
                    f"hymenoptera_data/{split}/{name}/1.jpg",
                    hashlib.sha512(f"{split}{name}".encode()).digest() * 400,
                    zipfile.ZIP_STORED,
                )
    return buffer.getvalue()


ARCHIVE = _archive()
SHA256 = hashlib.sha256(ARCHIVE).hexdigest()


class Server:
    def __init__(self) -> None:
        self.ranges: list[str | None] = []
        self.cut_next = False
        self.honour_range = True
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                owner.ranges.append(self.headers.get("Range"))
                body, status = ARCHIVE, 200
                header = self.headers.get("Range")
                if header and owner.honour_range:
                    start = int(header.removeprefix("bytes=").split("-")[0])
                    if start >= len(ARCHIVE):
                        self.send_response(416)
                        self.end_headers()
                        return
                    body, status = ARCHIVE[start:], 206
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header(
                        "Content-Range",
                        f"bytes {len(ARCHIVE) - len(body)}-{len(ARCHIVE) - 1}/{len(ARCHIVE)}",
                    )
                self.end_headers()
                if owner.cut_next:  # the connection drops half way through
                    owner.cut_next = False
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hymenoptera_data.zip"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv = Server()
    thread = threading.Thread(target=srv.httpd.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.rglob("*") if p.name.startswith(".") or p.suffix == ".part")


def test_fetch_verifies_and_extracts(tmp_path: Path, server: Server, capsys) -> None:
    assert main(["fetch", server.url, str(tmp_path / "data"), "--sha256", SHA256]) == 0
    root = tmp_path / "data" / "hymenoptera_data"
    assert capsys.readouterr().out.strip() == str(root)
    assert (root / "val" / "bees" / "1.jpg").stat().st_size == 64 * 400
    assert _leftovers(tmp_path / "data") == []


def test_checksum_mismatch_extracts_nothing(tmp_path: Path, server: Server, capsys) -> None:
    assert main(["fetch", server.url, str(tmp_path / "data"), "--sha256", "0" * 64]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: SHA-256 mismatch") and SHA256 in err
    assert not (tmp_path / "data" / "hymenoptera_data").exists()
    assert not list((tmp_path / "data").rglob("*.zip"))


def test_interrupted_download_resumes(tmp_path: Path, server: Server, capsys) -> None:
    server.cut_next = True
    assert main(["fetch", server.url, str(tmp_path / "data"), "--sha256", SHA256]) == 1
    assert "run again to resume" in capsys.readouterr().err
    part = tmp_path / "data" / ".downloads" / "hymenoptera_data.zip.part"
    have = part.stat().st_size
    assert 0 < have < len(ARCHIVE)
    assert not (tmp_path / "data" / "hymenoptera_data").exists()

    assert main(["fetch", server.url, str(tmp_path / "data"), "--sha256", SHA256]) == 0
    assert server.ranges == [None, f"bytes={have}-"]
    assert (tmp_path / "data" / "hymenoptera_data" / "train" / "ants" / "1.jpg").is_file()
    assert _leftovers(tmp_path / "data") == []


def test_server_without_range_restarts_cleanly(tmp_path: Path, server: Server) -> None:
    server.cut_next = True
    assert main(["fetch", server.url, str(tmp_path / "data"), "--sha256", SHA256]) == 1
    server.honour_range = False
    assert main(["fetch", server.url, str(tmp_path / "data"), "--sha256", SHA256]) == 0
    assert (tmp_path / "data" / "hymenoptera_data" / "val" / "ants" / "1.jpg").is_file()


def test_unreachable_server_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["fetch", "http://127.0.0.1:9/x.zip", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot download") and err.count("\n") == 1
