"""The notebook image for tests: built once by the role itself, reused by its tag.

The role tags the image with a hash of workload/Dockerfile, workload/requirements.lock
and the workload package, so this costs a full build (~4 min) only when one of them
changed, and a few seconds of ansible-playbook otherwise.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from tests.support.locks import machine_lock

PLAYBOOK = Path(__file__).resolve().parent / "playbooks" / "notebook_image.yml"


def build_notebook_image(repo_root: Path, env: dict[str, str], home: Path | None = None) -> str:
    """Run the role's image tasks on localhost; return the image reference (name:tag).

    One build at a time per machine: a session that starts beside another one's build
    waits for it and then finds the image by its tag.
    """
    with (
        machine_lock("notebook-image"),
        tempfile.TemporaryDirectory(prefix="wyvern-notebook-image-") as tmp,
    ):
        out = Path(tmp) / "image"
        home = home or Path(tmp) / "home"
        proc = subprocess.run(
            [
                "ansible-playbook",
                str(PLAYBOOK),
                "-e",
                f"notebook_home={home}",
                "-e",
                f"notebook_image_out={out}",
            ],
            cwd=repo_root,
            env=env,
            capture_output=True,
            text=True,
            timeout=1500,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"building the notebook image failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
            )
        return out.read_text().strip()
