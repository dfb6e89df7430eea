"""Show a background notebook run's training as it goes, until its async job ends.

The run role starts papermill with `async` and `poll: 0`, then this action reads the run's
progress.json on the host (ansible.builtin.slurp, through the task's connection) and the
job's status (ansible.builtin.async_status) every `interval` seconds. It prints one line
per finished epoch (epoch k/N, loss, accuracy, images/s, ETA), a line when the run starts
and a heartbeat line while nothing else is printed for a minute, through Ansible's display,
so the default callback's output stays as it is. The task's result summarises the run; a
run that fails (or outlives `timeout`) fails the task with papermill's error tail.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

DOCUMENTATION = r"""
action: run_progress
short_description: Show a background notebook run's progress until its async job ends
description:
  - Polls the run's progress.json and the async job started with C(poll=0), printing one
    line per epoch; fails with the job's error tail when the notebook fails.
options:
  jid: {description: The async job id of the papermill task., type: str, required: true}
  progress_file: {description: progress.json of the run on the host., type: path, required: true}
  interval: {description: Seconds between two looks., type: int, default: 5}
  timeout: {description: Seconds after which the run counts as failed., type: int, default: 3600}
  tail_lines: {description: Lines of the job's output shown when it fails., type: int, default: 25}
  nodes:
    description:
      - A distributed run's nodes, node 0 (whose job is O(jid)) first, each a dict with C(name), C(jid) (its
        torchrun job, started with C(poll=0) on this host) and C(log_file) (its log on this host). The run
        fails as soon as one node's job fails, with that node's log tail, and is done when all are.
    type: list
    elements: dict
    default: []
"""

display = Display()

# Nothing printed for this long: a heartbeat line, so a long epoch does not look hung.
HEARTBEAT_S = 60.0
# Beyond the job's own timeout, how long the async wrapper gets to report it.
GRACE_S = 30.0


def _duration(seconds: Any) -> str:
    if seconds is None:
        return "?"
    total = round(float(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _num(value: Any, spec: str) -> str:
    return "?" if value is None else format(float(value), spec)


def completed_epoch(record: dict[str, Any]) -> int:
    """The last epoch the record's loss and accuracy belong to (0: none finished yet)."""
    epoch, step, steps = record.get("epoch"), record.get("step"), record.get("steps_per_epoch")
    if not epoch:
        return 0
    if record.get("state") == "done" or (steps and step is not None and step >= steps):
        return int(epoch)
    return int(epoch) - 1


def epoch_line(record: dict[str, Any]) -> str:
    """`epoch 2/5: loss 0.4211, train acc 0.873, val acc 0.901, 412.3 images/s, ETA 1m05s`."""
    return (
        f"epoch {completed_epoch(record)}/{record.get('epochs') or '?'}: "
        f"loss {_num(record.get('loss'), '.4f')}, train acc {_num(record.get('train_acc'), '.3f')}, "
        f"val acc {_num(record.get('val_acc'), '.3f')}, "
        f"{_num(record.get('images_per_s'), '.1f')} images/s, ETA {_duration(record.get('eta_s'))}"
    )


def heartbeat_line(record: dict[str, Any] | None, elapsed: float) -> str:
    """Where the run is between two epoch lines."""
    if record is None:
        return f"waiting for the run to start ({_duration(elapsed)})"
    if record.get("state") == "starting" or not record.get("epoch"):
        return f"run {record.get('run_id')}: loading the data ({_duration(elapsed)})"
    if record.get("state") == "done" or completed_epoch(record) >= (record.get("epochs") or 0):
        return f"training done; the notebook's last cells are running ({_duration(elapsed)})"
    return (
        f"epoch {record.get('epoch')}/{record.get('epochs')}: step {record.get('step')}/"
        f"{record.get('steps_per_epoch')}, {_num(record.get('images_per_s'), '.1f')} images/s, "
        f"ETA {_duration(record.get('eta_s'))}"
    )


def error_tail(job: dict[str, Any], lines: int) -> list[str]:
    """The last lines of what the failed job wrote (papermill logs the cells' output to stderr)."""
    text = "\n".join(str(job.get(key) or "") for key in ("stdout", "stderr")).strip()
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    return tail or [str(job.get("msg") or "no output")]


def _job_failed(job: dict[str, Any]) -> bool:
    return bool(job.get("failed")) or job.get("rc") not in (0, None)


def combine_jobs(jobs: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """One status for the jobs of a distributed run's nodes (node 0 first): as soon as a node
    failed, the first one's status with `node` naming it and `failed_nodes` naming all that
    had failed by then (a killed node and the node that lost it may end in the same look);
    else node 0's once every node has finished; else not finished."""
    failed = [name for name, job in jobs if job.get("finished") and _job_failed(job)]
    if failed:
        first = dict(jobs)[failed[0]]
        return {**first, "node": failed[0], "failed_nodes": failed}
    if all(job.get("finished") for _, job in jobs):
        return {**jobs[0][1], "node": jobs[0][0]}
    return {"finished": False}


def _tail(text: str, lines: int) -> list[str]:
    return [line for line in text.splitlines() if line.strip()][-lines:]


@dataclass
class Poller:
    """The poll loop, with its boundary (the host, the clock, the screen) passed in."""

    job_status: Callable[[], dict[str, Any]]
    read_progress: Callable[[], dict[str, Any] | None]
    show: Callable[[str], None]
    interval: float = 5.0
    timeout: float = 3600.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    printed_epoch: int = 0
    lines: list[str] = field(default_factory=list)

    def _say(self, line: str) -> None:
        self.lines.append(line)
        self.show(line)

    def run(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Poll until the job finishes; return its final status and the last progress record."""
        started = self.clock()
        last_line_at = started
        said_start = False
        record: dict[str, Any] | None = None
        while True:
            job = self.job_status()
            finished = bool(job.get("finished"))
            record = self.read_progress() or record
            now = self.clock()
            if record is not None:
                if not said_start:
                    said_start = True
                    self._say(
                        f"run {record.get('run_id')} started: {record.get('epochs')} epoch(s) "
                        f"to train (process {record.get('pid')})"
                    )
                    last_line_at = now
                done = completed_epoch(record)
                if done > self.printed_epoch:
                    self.printed_epoch = done
                    self._say(epoch_line(record))
                    last_line_at = now
            if finished:
                return job, record
            if now - started > self.timeout + GRACE_S:
                raise TimeoutError(f"the run took longer than {int(self.timeout)} s")
            if now - last_line_at >= HEARTBEAT_S:
                self._say(heartbeat_line(record, now - started))
                last_line_at = now
            self.sleep(self.interval)


def summarise(
    job: dict[str, Any], record: dict[str, Any] | None, lines: list[str], tail_lines: int
) -> dict[str, Any]:
    """The task's result: the job's outcome, the last progress record, the lines shown."""
    failed = bool(job.get("failed")) or job.get("rc") not in (0, None)
    result: dict[str, Any] = {
        "changed": True,
        "progress": record,
        "lines": lines,
        "rc": job.get("rc"),
    }
    state = (record or {}).get("state")
    if failed and state == "stopped":
        # The workload's own stop: a signal (a spot notice, an idle stop, a person) made it
        # save a checkpoint and end; the run role continues it on the next run.yml.
        record = record or {}
        epoch, step = record.get("epoch"), record.get("step")
        if not epoch:
            where = "before training started"
        elif step and step == record.get("steps_per_epoch"):  # a signal while evaluating
            where = f"after epoch {epoch}"
        else:
            where = f"in epoch {epoch} at step {step}"
        result.update(
            failed=True,
            interrupted=True,
            error_tail=error_tail(job, tail_lines),
            msg=(
                f"The training was stopped {where} (by a signal: a spot notice, an idle "
                "stop, a person): run playbooks/run.yml again with the same settings to continue "
                "it from its last checkpoint (-e run_resume=false starts it again)."
            ),
        )
    elif failed:
        tail = error_tail(job, tail_lines)
        result.update(
            failed=True,
            error_tail=tail,
            msg=(
                f"The notebook failed (papermill rc={job.get('rc')}, training state "
                f"{state or 'unknown'}); its last lines:\n" + "\n".join(tail)
            ),
        )
    else:
        result["msg"] = (
            f"The notebook finished: {epoch_line(record)}"
            if record
            else "The notebook finished (it wrote no progress.json)"
        )
    return result


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    def _read_progress(self, path: str, task_vars: dict[str, Any]) -> dict[str, Any] | None:
        answer = self._execute_module(
            module_name="ansible.legacy.slurp",
            module_args={"src": path},
            task_vars=task_vars,
        )
        if answer.get("failed") or "content" not in answer:
            return None  # not written yet
        try:
            return json.loads(base64.b64decode(answer["content"]))
        except ValueError:
            return None

    def _job_status(self, jid: str, task_vars: dict[str, Any]) -> dict[str, Any]:
        async_dir = self._remote_expand_user(
            self.get_shell_option("async_dir", default="~/.ansible_async")
        )
        return self._execute_module(
            module_name="ansible.legacy.async_status",
            module_args={"jid": jid, "mode": "status", "_async_dir": async_dir},
            task_vars=task_vars,
        )

    def _read_text(self, path: str, task_vars: dict[str, Any]) -> str:
        answer = self._execute_module(
            module_name="ansible.legacy.slurp", module_args={"src": path}, task_vars=task_vars
        )
        if answer.get("failed") or "content" not in answer:
            return ""
        return base64.b64decode(answer["content"]).decode("utf-8", "replace")

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(
            argument_spec={
                "jid": {"type": "str", "required": True},
                "progress_file": {"type": "path", "required": True},
                "interval": {"type": "int", "default": 5},
                "timeout": {"type": "int", "default": 3600},
                "tail_lines": {"type": "int", "default": 25},
                "nodes": {"type": "list", "elements": "dict", "default": []},
            }
        )
        host = task_vars.get("inventory_hostname", "")
        nodes = args["nodes"]

        def job_status() -> dict[str, Any]:
            if not nodes:
                return self._job_status(args["jid"], task_vars)
            return combine_jobs(
                [(str(n["name"]), self._job_status(str(n["jid"]), task_vars)) for n in nodes]
            )

        poller = Poller(
            job_status=job_status,
            read_progress=lambda: self._read_progress(args["progress_file"], task_vars),
            show=lambda line: display.display(f"  [{host}] {line}"),
            interval=max(1, args["interval"]),
            timeout=args["timeout"],
        )
        try:
            job, record = poller.run()
        except TimeoutError as exc:
            raise AnsibleActionFail(
                f"{exc}; raise run_timeout, or look at {args['progress_file']}"
            ) from None
        result.update(summarise(job, record, poller.lines, args["tail_lines"]))
        if nodes:
            result["node"] = job.get("node")
            if not result.get("failed") and record is None:
                # A node other than node 0 (aws: one host per node): rank 0 reports progress.
                names = ", ".join(str(n["name"]) for n in nodes)
                result["msg"] = f"torchrun finished on {names} (rank 0 reports the training)"
        if nodes and result.get("failed"):
            lines: list[str] = []
            for name in job.get("failed_nodes") or [job.get("node")]:
                node = next(n for n in nodes if str(n["name"]) == name)
                tail = _tail(self._read_text(str(node["log_file"]), task_vars), args["tail_lines"])
                lines += [f"--- {name}: the last lines of its log {node['log_file']}"]
                lines += tail or error_tail(job, args["tail_lines"])
            result.update(
                error_tail=lines,
                msg=(
                    f"The distributed run failed on {', '.join(job.get('failed_nodes') or [])} "
                    f"(torchrun rc={job.get('rc')}, training state "
                    f"{(record or {}).get('state') or 'unknown'}):\n" + "\n".join(lines)
                ),
            )
        return result
