# Copyright: Wyvern workbench team
# Apache-2.0
"""Is Jupyter up: its REST API with the token, the container's state while it starts,
and a crash loop told apart from a slow start.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_container.common import (
    NotebookError,
)

# Seconds a restarted container gets to answer before the restart counts as a crash loop
# (a crash-looping one is usually seen in its `restarting` state well before).
CRASH_GRACE = 5.0


def jupyter_status(url: str, token: str, timeout: float = 2.0) -> int | None:
    """HTTP status of Jupyter's REST API, or None when nothing answers yet."""
    request = urllib.request.Request(
        f"{url}/api/status", headers={"Authorization": f"token {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, ValueError):
        return None


@dataclass
class ContainerState:
    """What ``docker inspect`` says about a starting container."""

    status: str
    restart_count: int = 0
    exit_code: int | None = None
    oom_killed: bool = False
    error: str = ""

    @classmethod
    def of(cls, attrs: dict[str, Any]) -> ContainerState:
        state = attrs.get("State") or {}
        return cls(
            status=str(state.get("Status") or "unknown"),
            restart_count=int(attrs.get("RestartCount") or 0),
            exit_code=state.get("ExitCode"),
            oom_killed=bool(state.get("OOMKilled")),
            error=str(state.get("Error") or ""),
        )


def exit_hint(state: ContainerState) -> str:
    """What an exit code usually means for a container's command."""
    if state.oom_killed or state.exit_code == 137:
        return "killed for memory (OOMKilled) or by SIGKILL; give it more memory"
    if state.exit_code == 127:
        return "command not found; the image lacks jupyter on PATH, rebuild it"
    if state.exit_code == 126:
        return "command not executable; fix the image's command"
    return "read the logs below and fix the image or its command"


class CrashLoop(NotebookError):
    """The container keeps crashing and Docker keeps restarting it."""


def wait_healthy(
    url: str,
    token: str,
    container_state: Callable[[], ContainerState],
    timeout: float,
    interval: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    status: Callable[[str, str], int | None] = jupyter_status,
    restarts_before: int = 0,
) -> float:
    """Poll until Jupyter answers 200 with the token; seconds waited.

    Fails fast when the container leaves the running state, when Docker restarts it (a
    crash loop under a restart policy: the state is ``restarting``, which shows the exit
    code, or the restart count grew past ``restarts_before`` and Jupyter still does not
    answer ``CRASH_GRACE`` seconds later), and after ``timeout``.
    """
    start = clock()
    deadline = start + timeout
    last = None
    restarted_at = None
    while True:
        last = status(url, token)
        if last == 200:
            return clock() - start
        state = container_state()
        restarts = state.restart_count - restarts_before
        if restarts > 0 and restarted_at is None:
            restarted_at = clock()
        if state.status == "restarting" or (
            restarted_at is not None and clock() - restarted_at >= CRASH_GRACE
        ):
            code = "not seen" if state.status != "restarting" else state.exit_code
            raise CrashLoop(
                f"the container crashed during start (exit code {code}) and Docker's restart "
                f"policy restarted it {max(restarts, 1)} time(s): a crash loop, not a slow "
                f"start; {exit_hint(state)}"
            )
        if state.status not in ("running", "created"):
            raise NotebookError(
                f"the container exited during start (state {state.status}, exit code "
                f"{state.exit_code}{', ' + state.error if state.error else ''}); {exit_hint(state)}"
            )
        if last in (401, 403):
            raise NotebookError(
                f"Jupyter at {url} refused the token (HTTP {last}); remove the token file or pass the right token"
            )
        if clock() >= deadline:
            raise NotebookError(
                f"Jupyter at {url} did not answer within {timeout:g}s (last status {last}); "
                "the container is left running: read the logs below, and raise the timeout "
                "if the host is just slow, or remove it with state: absent"
            )
        sleep(interval)
