"""Download an archive (resumable, SHA-256 checked) and extract it atomically."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from transfer_learning.errors import DownloadError, WorkloadError

DEFAULT_URL = "https://download.pytorch.org/tutorial/hymenoptera_data.zip"
CHUNK = 1 << 16


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, target: Path, timeout: float = 60.0, progress: bool | None = None) -> Path:
    """Download url to target; a `.part` left by an interrupted run is resumed (HTTP Range)."""
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "transfer-learning"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the part file already holds everything
            os.replace(part, target)
            return target
        raise DownloadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(
            f"cannot download {url}: {getattr(exc, 'reason', exc)}; check the URL and network"
        ) from None
    with response:
        resumed = have and response.status == 206
        if not resumed:
            have = 0  # the server ignored Range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        show = progress if progress is not None else sys.stderr.isatty()
        bar = None
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=target.name)
        try:
            with part.open("ab" if resumed else "wb") as fh:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    fh.write(block)
                    if bar is not None:
                        bar.update(len(block))
        except (OSError, urllib.error.URLError, http.client.HTTPException) as exc:
            raise DownloadError(
                f"download of {url} interrupted ({exc.__class__.__name__}); run again to resume"
            ) from None
        finally:
            if bar is not None:
                bar.close()
    size = part.stat().st_size
    if total is not None and size < total:
        raise DownloadError(
            f"download of {url} interrupted at {size} of {total} bytes; run again to resume"
        )
    os.replace(part, target)
    return target


def _safe_members(names: list[str], archive: Path) -> None:
    for name in names:
        p = Path(name)
        if p.is_absolute() or ".." in p.parts:
            raise WorkloadError(f"archive {archive} has an unsafe member path {name!r}")


def _plain_members(tf: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """The "data" filter's refusals, by hand: no absolute or `..` paths or link targets,
    no devices; modes made plain (no set-id bits), owners left to the extracting user."""
    members = tf.getmembers()
    _safe_members([m.name for m in members], archive)
    for m in members:
        if m.isdev():
            raise WorkloadError(f"archive {archive} holds a device file {m.name!r}")
        if m.issym() or m.islnk():
            target = Path(m.linkname)
            if m.issym() and not target.is_absolute():
                target = Path(m.name).parent / target
            if target.is_absolute() or ".." in Path(os.path.normpath(target)).parts:
                raise WorkloadError(f"archive {archive} has a link {m.name!r} leaving the archive")
        m.mode &= 0o755 if m.isdir() else 0o644
        m.uid = m.gid = 0
        m.uname = m.gname = ""
    return members


def extract(archive: Path, dest: Path) -> list[Path]:
    """Extract into a temporary directory beside dest, then move each top entry into place."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=dest) as tmp:
        tmp_path = Path(tmp)
        try:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as zf:
                    _safe_members(zf.namelist(), archive)
                    zf.extractall(tmp_path)
            elif tarfile.is_tarfile(archive):
                with tarfile.open(archive) as tf:
                    if hasattr(tarfile, "data_filter"):
                        tf.extractall(tmp_path, filter="data")
                    else:  # Python before 3.11.4 (Debian 12's 3.11.2): no extraction filters
                        tf.extractall(tmp_path, members=_plain_members(tf, archive))
            else:
                raise WorkloadError(f"{archive} is neither a zip nor a tar archive")
        except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
            raise WorkloadError(f"cannot extract {archive}: {exc}") from None
        moved = []
        for entry in sorted(tmp_path.iterdir()):
            if entry.name == "__MACOSX":
                continue
            final = dest / entry.name
            if final.exists():
                shutil.rmtree(final) if final.is_dir() else final.unlink()
            os.replace(entry, final)
            moved.append(final)
    return moved


def fetch(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str | None = None,
    progress: bool | None = None,
    keep_archive: bool = False,
) -> Path:
    """Download, verify and extract; returns the data root (the single top directory if any)."""
    dest_path = Path(dest)
    name = Path(urllib.parse.urlparse(url).path).name or "download"
    if urllib.parse.urlparse(url).scheme not in ("http", "https", "file"):
        raise WorkloadError(f"URL {url!r} must start with http://, https:// or file://")
    dest_path.mkdir(parents=True, exist_ok=True)
    downloads = dest_path / ".downloads"
    downloads.mkdir(exist_ok=True)
    archive = downloads / name
    if not archive.exists():
        download(url, archive, progress=progress)
    actual = _sha256(archive)
    if sha256 and actual != sha256.lower():
        archive.unlink()
        raise WorkloadError(
            f"SHA-256 mismatch for {url}: expected {sha256.lower()}, got {actual}; "
            "the file was removed, check the URL or --sha256"
        )
    if not sha256:
        print(f"warning: no --sha256 given; {name} has sha256 {actual}", file=sys.stderr)
    moved = extract(archive, dest_path)
    if not keep_archive:
        archive.unlink()
        with_contents = any(downloads.iterdir())
        if not with_contents:
            downloads.rmdir()
    dirs = [p for p in moved if p.is_dir()]
    return dirs[0] if len(dirs) == 1 and len(moved) == 1 else dest_path
