"""Run ansible-playbook as a user would, and read its PLAY RECAP."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
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


def run_playbook_until_training(
    root: Path,
    args: list[str],
    env: dict[str, str],
    outputs: Path,
    log: Path,
    act: Callable[[dict], None],
    epoch: int = 2,
    timeout: float = 900,
) -> tuple[PlaybookRun, Path]:
    """``ansible-playbook *args`` in the background; once a run under ``outputs`` (the host's
    notebook outputs) reports epoch ``epoch`` under way in its progress.json, ``act`` gets
    that record (to interrupt the training); then wait for the playbook to end. Returns the
    playbook's run and the run directory acted on."""
    import json
    import time

    with (
        log.open("w") as sink,  # a file: an unread pipe would block ansible-playbook once full
        subprocess.Popen(
            ["ansible-playbook", *args],
            cwd=root,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        ) as proc,
    ):
        try:
            deadline = time.monotonic() + timeout
            acted: Path | None = None
            while acted is None:
                assert proc.poll() is None, log.read_text()[-4000:]
                assert time.monotonic() < deadline, f"epoch {epoch} never started"
                for progress in outputs.glob("*/progress.json"):
                    try:
                        record = json.loads(progress.read_text())
                    except ValueError:
                        continue  # replaced while read
                    if record.get("state") == "running" and (record.get("epoch") or 0) >= epoch:
                        act(record)
                        acted = progress.parent
                        break
                time.sleep(0.2)
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
    return PlaybookRun(proc.returncode, log.read_text()), acted


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
