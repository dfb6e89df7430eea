"""playbooks/run.yml against a real notebook container on this machine: its settings come
from the inventory's group_vars (role defaults, not play vars, so group_vars count), the
training shows one line per epoch as it goes, and a failing notebook shows why.

Needs the notebook image (the shared `notebook_image` fixture builds or finds it); starts
the notebook with the repository's own playbooks (target.yml + notebook.yml), no host
configuration. A few minutes on two shared cores.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.cleanup import remove_workbench
from tests.support.outputs import host_notebook_home, run_outputs_dir
from tests.support.playbook import run_playbook
from tests.support.ports import reserved_port

# Epochs of a few seconds on a CPU, longer than the look every second, so each is seen.
GROUP_VARS = {
    "run_epochs": 2,
    "run_limit": 160,
    "run_image_size": 40,
    "run_batch_size": 16,
    "run_poll_interval": 1,
}
EPOCH_LINE = re.compile(
    r"^\s*\[localhost\] epoch (\d+)/2: loss \d+\.\d{4}, train acc \d\.\d{3}, val acc \d\.\d{3}, "
    r"\d+\.\d images/s, ETA \S+$",
    re.M,
)


def _code(source: str, tags: tuple[str, ...] = ()) -> dict:
    return {
        "cell_type": "code",
        "execution_count": None,
        "metadata": {"tags": list(tags)},
        "outputs": [],
        "source": source,
    }


# Not the example: no training, no metrics.json; it reads the same parameters.
USER_NOTEBOOK = {
    "nbformat": 4,
    "nbformat_minor": 5,
    "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
    },
    "cells": [
        _code('epochs = 1\noutput_dir = "outputs"\nrun_id = None', ("parameters",)),
        _code(
            "from pathlib import Path\n"
            "out = Path(output_dir) / run_id\n"
            "out.mkdir(parents=True, exist_ok=True)\n"
            "(out / 'hello.txt').write_text(f'epochs={epochs}')"
        ),
    ],
}


@pytest.fixture
def workbench(
    docker_client, notebook_image: str, repo_root: Path, ansible_env, tmp_path: Path
) -> Iterator[dict]:
    """A running notebook of its own, started by the repository's playbooks."""
    name = f"wb-run-{secrets.token_hex(4)}"
    home = host_notebook_home(name)
    assert not home.exists()
    up = tmp_path / "up.yml"
    up.write_text(
        yaml.safe_dump(
            [
                {"name": "Select", "ansible.builtin.import_playbook": str(repo_root / p)}
                for p in ("playbooks/target.yml", "playbooks/notebook.yml")
            ]
        )
    )
    with reserved_port() as port:
        settings = {
            "workbench_name": name,
            "notebook_port": port,
            "workbench_outputs_dir": str(tmp_path / "outputs"),
            "workbench_notebooks_dir": str(tmp_path / "notebooks"),
        }
        # The user's own notebook in their project: the notebook play syncs it over.
        (tmp_path / "notebooks").mkdir()
        (tmp_path / "notebooks" / "mine.ipynb").write_text(json.dumps(USER_NOTEBOOK))
        try:
            started = run_playbook(repo_root, str(up), ansible_env, settings)
            assert started.rc == 0, started.tail()
            yield settings
        finally:
            remove_workbench(docker_client, name)
            if home.exists():
                shutil.rmtree(home)


def _inventory(repo_root: Path, tmp_path: Path) -> list[str]:
    """The repository's inventory plus one whose group_vars/all sets the run."""
    extra = tmp_path / "inventory"
    (extra / "group_vars" / "all").mkdir(parents=True)
    (extra / "hosts.yml").write_text("all:\n  hosts: {}\n")
    (extra / "group_vars" / "all" / "run.yml").write_text(yaml.safe_dump(GROUP_VARS))
    return [str(repo_root / "inventory" / "local.yml"), str(extra / "hosts.yml")]


def test_group_vars_set_the_run_and_each_epoch_is_shown(
    repo_root: Path, ansible_env, workbench: dict, tmp_path: Path
) -> None:
    inventory = _inventory(repo_root, tmp_path)
    run = run_playbook(repo_root, "playbooks/run.yml", ansible_env, workbench, inventory)
    assert run.rc == 0, run.tail(80)

    (run_dir,) = run_outputs_dir(
        workbench["workbench_outputs_dir"], "localhost", workbench["workbench_name"]
    ).iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # The group_vars values, not the role's defaults (3 epochs, 64 px, every image).
    assert len(metrics["epochs"]) == 2
    assert metrics["image_size"] == 40 and metrics["batch_size"] == 16
    assert metrics["num_train"] == 160 and metrics["num_val"] == 160
    # The training as it went: one line per epoch, in order, with the run's own numbers.
    lines = EPOCH_LINE.findall(run.output)
    assert lines == ["1", "2"], run.tail(80)
    last = float(re.findall(r"val acc (\d\.\d{3})", run.output)[-1])
    assert last == pytest.approx(metrics["epochs"][-1]["val_acc"], abs=5e-4)
    assert "ASYNC POLL" not in run.output
    progress = json.loads((run_dir / "progress.json").read_text())
    assert progress["state"] == "done" and progress["epoch"] == 2

    # -e still wins over group_vars, and a notebook that fails says why (bad data is
    # refused before papermill starts: tests/integration/test_run_dataset.py).
    failed = run_playbook(
        repo_root,
        "playbooks/run.yml",
        ansible_env,
        {**workbench, "run_weights": "/workspace/missing.pt"},
        inventory,
    )
    assert failed.rc != 0
    text = " ".join(failed.output.split())
    assert "The notebook failed (papermill rc=1, training state failed)" in text, failed.tail(60)
    assert "unknown --weights '/workspace/missing.pt'" in text, failed.tail(60)

    # Any notebook of the user's project runs the same way, with the same parameters.
    mine = run_playbook(
        repo_root,
        "playbooks/run.yml",
        ansible_env,
        {**workbench, "run_notebook": "notebooks/mine.ipynb"},
        inventory,
    )
    assert mine.rc == 0, mine.tail(60)
    assert "notebooks/mine.ipynb executed" in mine.output, mine.tail(40)
    outputs = run_outputs_dir(
        workbench["workbench_outputs_dir"], "localhost", workbench["workbench_name"]
    )
    (mine_dir,) = [d for d in outputs.iterdir() if (d / "mine.ipynb").exists()]
    assert (mine_dir / "hello.txt").read_text() == "epochs=2"  # group_vars reached it
    again = run_playbook(
        repo_root,
        "playbooks/run.yml",
        ansible_env,
        {**workbench, "run_notebook": "notebooks/mine.ipynb"},
        inventory,
    )
    assert again.rc == 0 and again.changed == 0, again.tail(60)
