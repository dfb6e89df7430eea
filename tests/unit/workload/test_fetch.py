"""Archive extraction: safe member paths, all-or-nothing."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from transfer_learning.errors import WorkloadError
from transfer_learning.fetch import extract


def test_extract_moves_the_top_directory(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/train/x/1.txt", "1")
        zf.writestr("data/val/x/2.txt", "2")
    moved = extract(archive, tmp_path / "dest")
    assert moved == [tmp_path / "dest" / "data"]
    assert (tmp_path / "dest" / "data" / "val" / "x" / "2.txt").read_text() == "2"
    assert [p.name for p in (tmp_path / "dest").iterdir()] == ["data"]


def test_zip_slip_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/ok.txt", "ok")
        zf.writestr("../escaped.txt", "boom")
    with pytest.raises(WorkloadError, match="unsafe member"):
        extract(archive, tmp_path / "dest")
    assert not (tmp_path / "escaped.txt").exists()
    assert list((tmp_path / "dest").iterdir()) == []


def test_truncated_archive_leaves_nothing(tmp_path: Path) -> None:
    archive = tmp_path / "cut.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/big.txt", "x" * 10_000)
    archive.write_bytes(archive.read_bytes()[:-30])
    with pytest.raises(WorkloadError):
        extract(archive, tmp_path / "dest")
    assert list((tmp_path / "dest").iterdir()) == []


@pytest.mark.parametrize("filters", [True, False], ids=["data-filter", "no-filters"])
def test_a_tar_extracts_with_or_without_extraction_filters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, filters: bool
) -> None:
    """Debian 12's Python 3.11.2 (the notebook image's) has no tarfile.data_filter."""
    import io
    import tarfile

    if not filters:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    good = tmp_path / "good.tar.gz"
    with tarfile.open(good, "w:gz") as tf:
        info = tarfile.TarInfo("data/train/x/1.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"1"))
    assert extract(good, tmp_path / "dest") == [tmp_path / "dest" / "data"]
    assert (tmp_path / "dest" / "data" / "train" / "x" / "1.txt").read_text() == "1"
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tf:
        link = tarfile.TarInfo("data/passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
        tf.addfile(link)
    with pytest.raises(WorkloadError):
        extract(evil, tmp_path / "dest2")
    assert not (tmp_path / "dest2" / "data").exists()
