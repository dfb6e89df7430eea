"""The one exception type the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations


class WorkloadError(Exception):
    """Bad input (usage, data, weights, checkpoint): reported as one line, exit code 2."""

    exit_code = 2


class DownloadError(WorkloadError):
    """A download that failed or was cut short; running the command again resumes it."""

    exit_code = 1


class Interrupted(WorkloadError):
    """A signal stopped the run after a checkpoint; the message says how to continue."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum  # what a shell shows for a process ended by the signal
