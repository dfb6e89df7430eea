"""One builder per machine for the expensive shared fixtures (base and notebook images).

Every test session, worktree and CI job on a machine shares one Docker engine; images are
cached by tag, but two sessions that start together would both find the tag missing and
both build it. An exclusive lock file per artefact makes the second one wait and then
find the first one's image.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_DIR = Path(os.environ.get("WYVERN_TEST_LOCKS", "/tmp/wyvern-test-locks"))


@contextlib.contextmanager
def machine_lock(name: str) -> Iterator[None]:
    LOCK_DIR.mkdir(mode=0o777, parents=True, exist_ok=True)
    key = hashlib.sha256(name.encode()).hexdigest()[:16]
    with open(LOCK_DIR / f"{key}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
