"""Host files: the token file and the read-only copy the container mounts."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_container import (
    host,
    spec,
)

TOKEN = "s3cr3t-" + "x" * 36


def test_token_created_once_with_0600_and_kept(tmp_path: Path) -> None:
    token_file = tmp_path / "sub" / "token"
    token, changed = host.ensure_token(None, str(token_file), check_mode=False)
    assert changed and len(token) >= 43  # 32 random bytes, URL-safe base64
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    again, changed_again = host.ensure_token(None, str(token_file), check_mode=False)
    assert (again, changed_again) == (token, False)


def test_token_check_mode_writes_nothing(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    _, changed = host.ensure_token(None, str(token_file), check_mode=True)
    assert changed and not token_file.exists()


def test_given_token_replaces_the_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    host.ensure_token(None, str(token_file), check_mode=False)
    token, changed = host.ensure_token("given-token", str(token_file), check_mode=False)
    assert (token, changed) == ("given-token", True)
    assert token_file.read_text().strip() == "given-token"


def test_token_mount_is_0444_in_a_0700_directory_written_in_place(tmp_path: Path) -> None:
    token_file = str(tmp_path / "token")
    assert host.ensure_token_mount(TOKEN, token_file, check_mode=True)
    assert not (tmp_path / "token.d").exists()

    assert host.ensure_token_mount(TOKEN, token_file, check_mode=False)
    mount = Path(spec.token_mount_path(token_file))
    assert mount.read_text() == TOKEN  # no newline: Jupyter does not strip the file
    assert stat.S_IMODE(mount.stat().st_mode) == 0o444
    assert stat.S_IMODE(mount.parent.stat().st_mode) == 0o700
    assert not host.ensure_token_mount(TOKEN, token_file, check_mode=False)

    inode = mount.stat().st_ino
    assert host.ensure_token_mount("new-token", token_file, check_mode=False)
    assert mount.read_text() == "new-token"
    assert mount.stat().st_ino == inode  # a running container's bind mount sees it
