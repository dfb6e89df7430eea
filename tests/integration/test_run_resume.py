"""An interrupted run continues from its checkpoint when run.yml runs it again.

A real notebook container on this machine (the `workbench` fixture of test_run_role.py),
the real notebook executed by papermill: the training is sent SIGTERM mid-run, as the spot
watcher, the idle agent or a person would, run.yml fails saying how to go on, and run.yml
again continues the run from its checkpoint to the same learning curve as a run nobody
interrupted (-e run_force=true, same run id, from the beginning).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from tests.integration.test_run_role import workbench  # noqa: F401  (a fixture)
from tests.support.outputs import host_notebook_home, run_outputs_dir
from tests.support.playbook import PlaybookRun, run_playbook, run_playbook_until_training

ROOT = Path(__file__).resolve().parents[2]
# Three epochs of 20 steps at 40 px: a few seconds each on a CPU, so the signal sent once
# epoch 2 is under way lands before the end.
RUN = {
    "run_epochs": 3,
    "run_limit": 320,
    "run_image_size": 40,
    "run_batch_size": 16,
    "run_poll_interval": 1,
}


def _curve(run_dir: Path) -> list[tuple[float, ...]]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
    return [tuple(row[k] for k in keys) for row in metrics["epochs"]]


def _flat(output: str) -> str:
    return " ".join(output.split())


def _signal_command(container: str, pid: int) -> list[str]:
    """SIGTERM as the spot watcher sends it: the durable outputs role's own default."""
    defaults = yaml.safe_load((ROOT / "roles/durable_outputs/defaults/main.yml").read_text())
    command = defaults["durable_outputs_signal_command"]
    return [part.format(container=container, signal="TERM", pid=pid) for part in command]


def _interrupted_run(
    repo_root: Path, env: dict, settings: dict, log: Path
) -> tuple[PlaybookRun, Path]:
    """run.yml in the background; SIGTERM to the training once epoch 2 is under way."""
    name = settings["workbench_name"]

    def sigterm(record: dict) -> None:
        kill = _signal_command(name, record["pid"])
        subprocess.run(kill, check=True, capture_output=True, timeout=30)

    return run_playbook_until_training(
        repo_root,
        ["playbooks/run.yml", "-e", json.dumps(settings)],
        env,
        host_notebook_home(name) / "outputs",
        log,
        sigterm,
    )


def test_an_interrupted_run_continues_from_its_checkpoint(
    repo_root: Path,
    ansible_env,
    workbench: dict,  # noqa: F811
    tmp_path: Path,
) -> None:
    settings = {**workbench, **RUN}
    stopped, host_dir = _interrupted_run(repo_root, ansible_env, settings, tmp_path / "run.log")
    assert stopped.rc != 0, stopped.tail(60)
    text = _flat(stopped.output)
    # Mid-epoch, or after the epoch's last step while it is evaluated (progress.json is
    # written every few seconds, the epochs are short): both keep what was trained.
    assert re.search(
        r"The training was stopped (in epoch [23] at step \d+|after epoch 2) \(by a signal", text
    ), stopped.tail(60)
    assert "run playbooks/run.yml again with the same settings to continue it" in text
    assert (host_dir / "checkpoint.pt").is_file() and not (host_dir / "run.json").exists()
    run_id = host_dir.name
    assert json.loads((host_dir / "started.json").read_text())["run_id"] == run_id

    resumed = run_playbook(repo_root, "playbooks/run.yml", ansible_env, settings)
    assert resumed.rc == 0, resumed.tail(80)
    # Looking for checkpoints where there are none yet is quiet (find warns on a missing path).
    for output in (stopped.output, resumed.output):
        assert "access issue" not in output, output
    assert (
        f"Run {run_id} was interrupted before its end: it continues from its checkpoint "
        "(on localhost)" in _flat(resumed.output)
    ), resumed.tail(80)
    run_dir = run_outputs_dir(
        workbench["workbench_outputs_dir"], "localhost", workbench["workbench_name"], run_id
    )
    record = json.loads((run_dir / "run.json").read_text())
    assert record["parameters"]["resume"] is True
    curve = _curve(run_dir)
    assert len(curve) == 3
    # Done now: a third run.yml changes nothing.
    again = run_playbook(repo_root, "playbooks/run.yml", ansible_env, settings)
    assert again.rc == 0 and again.changed == 0, again.tail(60)

    # The same run from the beginning, nobody interrupting it: the same learning curve.
    forced = run_playbook(
        repo_root, "playbooks/run.yml", ansible_env, {**settings, "run_force": True}
    )
    assert forced.rc == 0, forced.tail(80)
    assert "was interrupted before its end" not in forced.output
    assert json.loads((run_dir / "run.json").read_text())["parameters"]["resume"] is False
    assert _curve(run_dir) == curve
