"""Where the playbooks put a run's outputs, in one place.

The control-node layout of run.yml and teardown.yml lives here only, so a change of
layout is a change of this file. The host-side paths come from the notebook role's own
defaults, never from a copy of them.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
import yaml

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DEFAULTS = ROOT / "roles" / "notebook" / "defaults" / "main.yml"


def run_outputs_dir(
    outputs_root: Path | str, host: str, workbench: str, run_id: str | None = None
) -> Path:
    """<workbench_outputs_dir>/<host>/<workbench>/[<run_id>/] on the control node."""
    base = Path(outputs_root) / host / workbench
    return base / run_id if run_id else base


def notebook_default(variable: str, **context: str) -> str:
    """A notebook role default rendered as the role renders it (simple Jinja only)."""
    defaults = yaml.safe_load(NOTEBOOK_DEFAULTS.read_text())
    value = str(defaults[variable])
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters["default"] = lambda value, default=None, *_: (
        default if value is None or isinstance(value, jinja2.Undefined) else value
    )
    for _ in range(5):  # defaults refer to other defaults (notebook_home -> notebook_name)
        if "{{" not in value:
            return value
        names = {**{k: str(v) for k, v in defaults.items()}, **context}
        if "workbench_name" not in names:
            names["workbench_name"] = None  # type: ignore[assignment]
        value = env.from_string(value).render(**names)
    raise ValueError(f"{variable} does not resolve: {value}")


def host_notebook_home(workbench: str, rank: int = 0) -> Path:
    """The host directory the notebook role uses for a workbench of this name (node `rank`
    of an aws workbench of several instances: its own, named as its container is)."""
    context = {"workbench_name": workbench}
    if rank:
        context["workbench_node_rank"] = str(rank)
    return Path(notebook_default("notebook_home", **context))
