"""Run one module on this machine as Ansible runs it (`ansible localhost -m`), read its result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_module(module: str, args: str, tmp_path: Path, *extra: str) -> dict[str, Any]:
    """The module's result as JSON; a failed `ansible` command raises with its output."""
    env = {
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
        "HOME": str(tmp_path),
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
    }
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible"),
            "localhost",
            "-m",
            module,
            "-a",
            args,
            "-o",
            *extra,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return json.loads(out.split("=>", 1)[1])
