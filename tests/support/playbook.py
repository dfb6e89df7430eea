"""Run ansible-playbook as a user would, and read its PLAY RECAP."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

RECAP_LINE = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.M,
)


@dataclass
class PlaybookRun:
    rc: int
    output: str

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        return {
            m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
            for m in RECAP_LINE.finditer(self.output)
        }

    @property
    def changed(self) -> int:
        return sum(host["changed"] for host in self.recap.values())

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def run_playbook(
    root: Path,
    playbook: str,
    env: dict[str, str],
    extra_vars: dict[str, object] | None = None,
    inventory: list[str] | None = None,
    timeout: float = 1800,
    check: bool = False,
) -> PlaybookRun:
    import json

    cmd = ["ansible-playbook", playbook]
    if check:
        cmd.append("--check")
    for source in inventory or []:
        cmd += ["-i", source]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    proc = subprocess.run(
        cmd,
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    return PlaybookRun(proc.returncode, proc.stdout)


def forget_host_outputs(workbench_name: str) -> None:
    """Drop what an earlier test session left in the notebook's outputs on this machine.

    run.yml rightly skips a run whose outputs the host already holds; a test that must see
    the notebook execute starts without them. Only the test's own workbench is touched.
    The directory is the notebook role's own default for this workbench name, and a
    failure to remove it is an error: a leftover run would be skipped as already done.
    """
    import shutil

    from tests.support.outputs import host_notebook_home

    outputs = host_notebook_home(workbench_name) / "outputs"
    if outputs.exists():
        shutil.rmtree(outputs)
    if outputs.exists():
        raise RuntimeError(f"could not remove {outputs}")
