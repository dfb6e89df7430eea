"""Lookup sha256_tree: what the notebook image tag hashes, taken on the control node."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from ansible.errors import AnsibleLookupError
from ansible_collections.wyvern.workbench.plugins.lookup.sha256_tree import (
    LookupModule,
    sha256_tree,
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_lists_every_regular_file_with_its_sha256_sorted_by_path(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "Dockerfile").write_bytes(b"FROM x\n")
    (tmp_path / "pkg" / "b.py").write_bytes(b"b")
    (tmp_path / "pkg" / "a.py").write_bytes(b"a")
    (tmp_path / "pkg" / "sub" / ".hidden").write_bytes(b"h")
    big = os.urandom(3 << 20)  # more than one read chunk
    (tmp_path / "pkg" / "weights.bin").write_bytes(big)

    assert sha256_tree(str(tmp_path)) == [
        ["Dockerfile", _sha(b"FROM x\n")],
        ["pkg/a.py", _sha(b"a")],
        ["pkg/b.py", _sha(b"b")],
        ["pkg/sub/.hidden", _sha(b"h")],
        ["pkg/weights.bin", _sha(big)],
    ]


def test_leaves_out_excluded_names_links_and_linked_folders(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_bytes(b"m")
    (tmp_path / "pkg" / "m.cpython-311.pyc").write_bytes(b"c")
    (tmp_path / "pkg" / "link.py").symlink_to(tmp_path / "pkg" / "m.py")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "secret.py").write_bytes(b"s")
    (tmp_path / "linked").symlink_to(outside, target_is_directory=True)

    assert sha256_tree(str(tmp_path), ["*.pyc", "*.pyo"]) == [["pkg/m.py", _sha(b"m")]]


def test_a_changed_byte_changes_the_listing(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"one")
    before = sha256_tree(str(tmp_path))
    (tmp_path / "f").write_bytes(b"onE")
    assert sha256_tree(str(tmp_path)) != before


def test_a_missing_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(AnsibleLookupError, match="nothing-here is not a folder"):
        sha256_tree(str(tmp_path / "nothing-here"))


def test_the_lookup_takes_excludes_as_an_option(tmp_path: Path) -> None:
    lookup = LookupModule()
    (tmp_path / "keep.txt").write_bytes(b"k")
    (tmp_path / "drop.pyo").write_bytes(b"d")
    assert lookup.run([str(tmp_path)], variables={}, excludes=["*.pyo"]) == [
        ["keep.txt", _sha(b"k")]
    ]
    with pytest.raises(AnsibleLookupError, match=r"unknown option.*exclude"):
        lookup.run([str(tmp_path)], variables={}, exclude=["*.pyo"])


def test_an_unreadable_file_is_an_error_naming_it(tmp_path: Path, monkeypatch) -> None:
    """Root reads every file here, so the refusal is the OS's answer, simulated."""
    from ansible_collections.wyvern.workbench.plugins.lookup import sha256_tree as plugin

    def refuse(path: str) -> str:
        raise PermissionError(13, "Permission denied", path)

    (tmp_path / "locked.py").write_bytes(b"x")
    monkeypatch.setattr(plugin, "sha256_file", refuse)
    with pytest.raises(AnsibleLookupError, match=r"cannot read .*locked\.py: Permission denied"):
        sha256_tree(str(tmp_path))
