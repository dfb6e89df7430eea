"""Teardown fetches every output before it removes anything, including outputs that only
the workbench has: a file written after run.yml fetched its run, and a run that was never
fetched (made by hand in Jupyter). The full lifecycle in tests/e2e checks the same with a
real notebook; this one needs no image and takes seconds.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cleanup import remove_workbench
from tests.support.outputs import host_notebook_home, run_outputs_dir
from tests.support.playbook import run_playbook


@pytest.fixture
def workbench_name(docker_client) -> Iterator[str]:
    name = f"wb-teardown-{secrets.token_hex(4)}"
    home = host_notebook_home(name)
    assert not home.exists()
    yield name
    remove_workbench(docker_client, name)
    if home.exists():
        shutil.rmtree(home)


def test_teardown_fetches_outputs_only_the_workbench_has(
    repo_root: Path, ansible_env: dict[str, str], workbench_name: str, tmp_path: Path
) -> None:
    host_outputs = host_notebook_home(workbench_name) / "outputs"
    made = {
        "finetune-0123456789/metrics.json": '{"epochs": []}\n',
        "finetune-0123456789/notes-after-fetch.txt": "written after run.yml fetched\n",
        "interactive-session/result.txt": "never fetched by run.yml\n",
    }
    for relative, text in made.items():
        (host_outputs / relative).parent.mkdir(parents=True, exist_ok=True)
        (host_outputs / relative).write_text(text)
    outputs = tmp_path / "outputs"
    settings = {"workbench_name": workbench_name, "workbench_outputs_dir": str(outputs)}

    down = run_playbook(repo_root, "playbooks/teardown.yml", ansible_env, settings)
    assert down.rc == 0, down.tail()
    for relative, text in made.items():
        run_id, _, name = relative.partition("/")
        fetched = run_outputs_dir(outputs, "localhost", workbench_name, run_id) / name
        assert fetched.read_text() == text, relative
    # A local host keeps its outputs too: teardown copies, it never deletes them there.
    assert all((host_outputs / relative).exists() for relative in made)
