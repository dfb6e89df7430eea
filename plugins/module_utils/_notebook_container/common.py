# Copyright: Wyvern workbench team
# Apache-2.0
"""What every layer of the notebook container shares: its error and the secret mask."""

from __future__ import annotations

from typing import Any

HIDDEN = "********"


class NotebookError(Exception):
    """A failure the user can act on: ``str()`` is one line, reason then fix."""

    def __init__(self, message: str, logs: list[str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.logs = logs
        self.extra = extra
