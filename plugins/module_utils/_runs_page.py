# Copyright: Wyvern workbench team
# Apache-2.0
"""The runs page: every run fetched to the control node, side by side.

Runs live under <outputs_dir>/<host>/<workbench>/<run_id>/ (run.yml's layout) with the
workload's files: metrics.json, environment.json, curves.png, confusion.png, the executed
transfer_learning.ipynb, and cost.json where the hourly price of the host was known. The
page is <outputs_dir>/index.html with relative links, so the folder can be moved or
served as it is. Everything shown comes from files that users' parameters reach (run ids,
data paths, workbench names): all of it is HTML-escaped, and links are URL-quoted.

Standard library only: this runs on the control node under any Python Ansible uses.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

METRICS = "metrics.json"
ENVIRONMENT = "environment.json"
NOTEBOOK = "transfer_learning.ipynb"
CURVES = "curves.png"
CONFUSION = "confusion.png"
COST = "cost.json"
# Written by the durable-outputs agent when a spot notice (or a rebalance recommendation)
# made it checkpoint a run; it comes home with the run (or from S3 after a reclaim).
INTERRUPTION = "interruption.json"
# A run directory holds at least one of these; anything else under outputs/ is ignored.
RUN_MARKERS = (METRICS, NOTEBOOK, ENVIRONMENT, INTERRUPTION)
NOTICE_NAMES = {
    "instance-action": "spot interruption notice",
    "rebalance": "rebalance recommendation",
}
# Parameters that say nothing about the run itself.
HIDDEN_PARAMETERS = {"output_dir", "run_id", "progress", "resume"}


@dataclass
class Run:
    host: str
    workbench: str
    run_id: str
    rel: str  # the run directory relative to the page, POSIX separators
    finished: str | None = None  # ISO 8601, UTC
    device: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    best_val_acc: float | None = None
    best_epoch: int | None = None
    epochs: int | None = None
    images_per_s: float | None = None
    wall_time_s: float | None = None
    usd_per_hour: float | None = None
    instance_type: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # name -> relative link
    problems: list[str] = field(default_factory=list)
    interruptions: list[str] = field(default_factory=list)  # one line per notice acted on

    @property
    def cost_usd(self) -> float | None:
        if self.usd_per_hour is None or self.wall_time_s is None:
            return None
        return self.usd_per_hour * self.wall_time_s / 3600

    def summary(self) -> dict[str, Any]:
        """The run as the module returns it (JSON-friendly)."""
        return {
            "host": self.host,
            "workbench": self.workbench,
            "run_id": self.run_id,
            "path": self.rel,
            "finished": self.finished,
            "device": self.device,
            "parameters": self.parameters,
            "best_val_acc": self.best_val_acc,
            "best_epoch": self.best_epoch,
            "epochs": self.epochs,
            "images_per_s": self.images_per_s,
            "wall_time_s": self.wall_time_s,
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 4),
            "files": dict(self.files),
            "problems": list(self.problems),
            "interruptions": list(self.interruptions),
        }


def _read_json(path: Path, run: Run) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        run.problems.append(f"{path.name} is unreadable ({exc.__class__.__name__})")
        return None
    if not isinstance(data, dict):
        run.problems.append(f"{path.name} is not a JSON object")
        return None
    return data


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _iso_utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_run(root: Path, run_dir: Path) -> Run:
    host, workbench, run_id = run_dir.relative_to(root).parts
    run = Run(host, workbench, run_id, "/".join((host, workbench, run_id)))
    for name in (CURVES, CONFUSION, NOTEBOOK, METRICS, ENVIRONMENT):
        if (run_dir / name).is_file():
            run.files[name] = f"{run.rel}/{name}"

    run.interruptions = _interruptions(_read_json(run_dir / INTERRUPTION, run))
    metrics = _read_json(run_dir / METRICS, run)
    if metrics is None and METRICS not in run.files:
        run.problems.append(
            "interrupted before it finished: continue it from its checkpoint (README: How to resume)"
            if run.interruptions
            else "no metrics.json (the run did not finish, or was not fetched)"
        )
    metrics = metrics or {}
    run.device = metrics.get("device") if isinstance(metrics.get("device"), str) else None
    run.best_val_acc = _number(metrics.get("best_val_acc"))
    best_epoch = metrics.get("best_epoch")
    run.best_epoch = best_epoch if isinstance(best_epoch, int) else None
    epochs = metrics.get("epochs")
    run.epochs = len(epochs) if isinstance(epochs, list) else None
    run.images_per_s = _number(metrics.get("images_per_s"))
    run.wall_time_s = _number(metrics.get("wall_time_s"))

    environment = _read_json(run_dir / ENVIRONMENT, run) or {}
    gpus = environment.get("gpus")
    if isinstance(gpus, list) and gpus and run.device and run.device.startswith("cuda"):
        names = sorted({str(g) for g in gpus})
        run.device = (
            f"{run.device} ({', '.join(names)}{' x' + str(len(gpus)) if len(gpus) > 1 else ''})"
        )
    arguments = environment.get("arguments")

    notebook_meta: dict[str, Any] = {}
    if NOTEBOOK in run.files:
        notebook = _read_json(run_dir / NOTEBOOK, run) or {}
        meta = notebook.get("metadata")
        papermill = meta.get("papermill") if isinstance(meta, dict) else None
        notebook_meta = papermill if isinstance(papermill, dict) else {}

    # What the user asked for: papermill's parameters, else the CLI's arguments.
    parameters = notebook_meta.get("parameters") or arguments or {}
    if isinstance(parameters, dict):
        run.parameters = {
            str(k): v for k, v in sorted(parameters.items()) if k not in HIDDEN_PARAMETERS
        }

    end = notebook_meta.get("end_time")
    if isinstance(end, str):
        try:
            parsed = datetime.fromisoformat(end)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            run.finished = _iso_utc(parsed.timestamp())
        except ValueError:
            pass
    if run.finished is None and METRICS in run.files:
        run.finished = _iso_utc((run_dir / METRICS).stat().st_mtime)

    cost = _read_json(run_dir / COST, run) or {}
    run.usd_per_hour = _number(cost.get("usd_per_hour"))
    if isinstance(cost.get("instance_type"), str):
        run.instance_type = cost["instance_type"]
    return run


def _interruptions(record: dict[str, Any] | None) -> list[str]:
    """One line per notice the agent acted on, oldest first (the file keeps the history)."""
    if not record:
        return []
    history = record.get("interruptions")
    entries = history if isinstance(history, list) and history else [record]
    lines = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        kind = entry.get("kind")
        what = NOTICE_NAMES.get(kind, str(kind)) if isinstance(kind, str) else "interruption"
        when = entry.get("received_at")
        saved = entry.get("checkpoint_saved")
        outcome = {True: "checkpoint saved", False: "no checkpoint saved"}.get(saved, "")
        signal = entry.get("signal")
        parts = [f"{what} at {when}" if isinstance(when, str) else what]
        parts += [str(part) for part in (signal, outcome) if isinstance(part, str) and part]
        lines.append(", ".join(parts))
    return lines


def collect_runs(outputs_dir: str | os.PathLike[str]) -> list[Run]:
    """Every run directory three levels down (host/workbench/run), newest first."""
    root = Path(outputs_dir)
    runs: list[Run] = []
    if not root.is_dir():
        return runs
    for run_dir in sorted(root.glob("*/*/*")):
        parts = run_dir.relative_to(root).parts
        if any(p.startswith(".") for p in parts) or not run_dir.is_dir():
            continue
        if any((run_dir / marker).is_file() for marker in RUN_MARKERS):
            runs.append(read_run(root, run_dir))
    runs.sort(key=lambda r: (r.finished or "", r.host, r.workbench, r.run_id), reverse=True)
    return runs


# --- the terminal table -------------------------------------------------------------


def _fmt(value: float | None, pattern: str, missing: str = "-") -> str:
    return missing if value is None else pattern.format(value)


def _parameter_text(parameters: dict[str, Any]) -> str:
    return " ".join(f"{k}={_scalar(v)}" for k, v in parameters.items())


def _scalar(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return value if isinstance(value, str) else json.dumps(value)


def _cost_text(run: Run) -> str:
    if run.cost_usd is None:
        return "-"
    return f"{run.cost_usd:.3f} USD"


TABLE_COLUMNS = (
    "host",
    "workbench",
    "run",
    "finished",
    "device",
    "best acc",
    "img/s",
    "wall",
    "cost",
    "parameters",
)


def table_rows(runs: list[Run]) -> list[list[str]]:
    return [
        [
            run.host,
            run.workbench,
            run.run_id,
            (run.finished or "-").replace("T", " ").rstrip("Z"),
            run.device or "-",
            _fmt(run.best_val_acc, "{:.3f}"),
            _fmt(run.images_per_s, "{:.1f}"),
            _fmt(run.wall_time_s, "{:.0f} s"),
            _cost_text(run),
            _parameter_text(run.parameters)
            + "".join(f" [interrupted: {line}]" for line in run.interruptions)
            + (f" [{'; '.join(run.problems)}]" if run.problems else ""),
        ]
        for run in runs
    ]


def render_table(runs: list[Run]) -> list[str]:
    """The runs as aligned text lines (the last column, parameters, is not padded)."""
    if not runs:
        return ["No runs fetched yet: run `ansible-playbook playbooks/run.yml` first."]
    # Control characters from a user's parameters must not reach the terminal.
    rows = [
        ["".join(ch if ch.isprintable() else "?" for ch in cell) for cell in row]
        for row in table_rows(runs)
    ]
    header = list(TABLE_COLUMNS)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return lines


# --- the HTML page ------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _href(rel: str) -> str:
    return _e(quote(rel, safe="/"))


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 0.4em 0.6em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.params { font-family: ui-monospace, monospace; font-size: 12px; max-width: 22em; }
img { width: 260px; height: auto; display: block; }
.problem { color: #a40000; }
.interruption { color: #8a5a00; }
"""


def _image_cell(run: Run, name: str, label: str) -> str:
    if name not in run.files:
        return '<td class="missing">-</td>'
    href = _href(run.files[name])
    alt = _e(f"{label} of {run.run_id}")
    return f'<td><a href="{href}"><img src="{href}" alt="{alt}" loading="lazy"></a></td>'


def _run_row(run: Run) -> str:
    params = "<br>".join(f"{_e(k)}={_e(_scalar(v))}" for k, v in run.parameters.items())
    notices = "".join(
        f'<div class="interruption">interrupted: {_e(line)}</div>' for line in run.interruptions
    )
    problems = "".join(f'<div class="problem">{_e(p)}</div>' for p in run.problems)
    notebook = (
        f'<a href="{_href(run.files[NOTEBOOK])}">executed notebook</a>'
        if NOTEBOOK in run.files
        else "-"
    )
    metrics = (
        f'<br><a href="{_href(run.files[METRICS])}">metrics.json</a>'
        if METRICS in run.files
        else ""
    )
    best = _fmt(run.best_val_acc, "{:.3f}")
    if run.best_epoch is not None and run.epochs is not None:
        best += f" (epoch {run.best_epoch}/{run.epochs})"
    cost = _cost_text(run)
    if run.cost_usd is not None:
        cost += f"<br>{_e(run.instance_type or '?')} at {run.usd_per_hour:.3f} USD/h"
    cells = [
        f"<td>{_e(run.host)}</td>",
        f"<td>{_e(run.workbench)}</td>",
        f"<td>{_e(run.run_id)}<br><small>{_e(run.finished or '')}</small>{notices}{problems}</td>",
        f"<td>{_e(run.device or '-')}</td>",
        f'<td class="params">{params or "-"}</td>',
        f'<td class="num">{_e(best)}</td>',
        f'<td class="num">{_e(_fmt(run.images_per_s, "{:.1f}"))}</td>',
        f'<td class="num">{_e(_fmt(run.wall_time_s, "{:.0f} s"))}</td>',
        f'<td class="num">{cost if run.cost_usd is not None else "-"}</td>',
        _image_cell(run, CURVES, "curves"),
        _image_cell(run, CONFUSION, "confusion matrix"),
        f"<td>{notebook}{metrics}</td>",
    ]
    return '<tr class="run">' + "".join(cells) + "</tr>"


def render_html(runs: list[Run], title: str = "Wyvern workbench runs") -> str:
    """The page: one row per run, newest first; the same input gives the same bytes."""
    head = (
        "<th>host</th><th>workbench</th><th>run</th><th>device</th><th>parameters</th>"
        "<th>best val. accuracy</th><th>images/s</th><th>wall time</th><th>cost</th>"
        "<th>curves</th><th>confusion matrix</th><th>notebook</th>"
    )
    if runs:
        body = "\n".join(_run_row(run) for run in runs)
        table = f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"
    else:
        table = "<p>No runs fetched yet: run <code>ansible-playbook playbooks/run.yml</code>.</p>"
    count = f"{len(runs)} run{'s' if len(runs) != 1 else ''}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{_e(title)}</h1>\n<p>{count}, newest first. Cost is the run's wall time at the "
        "host's hourly price, where it was recorded.</p>\n"
        f"{table}\n</body>\n</html>\n"
    )


# --- writing ------------------------------------------------------------------------


def write_if_changed(path: Path, content: str, check_mode: bool = False) -> bool:
    """Write the file atomically when its content differs; return whether it did (or would)."""
    try:
        if path.read_text(encoding="utf-8") == content:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    if not check_mode:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A temporary file of this writer's own: the hosts of a workbench of several nodes
        # write the page at once (teardown's fetch on every node), and a shared name would
        # be replaced under one of them.
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(content)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return True


def cost_record(instance_type: str | None, usd_per_hour: float) -> str:
    return (
        json.dumps({"instance_type": instance_type, "usd_per_hour": usd_per_hour}, indent=2) + "\n"
    )
