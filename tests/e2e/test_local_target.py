"""site.yml end to end on this machine: the default target, as `make demo` runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.moto import free_port
from tests.support.playbook import forget_host_outputs, run_playbook

NAME = "wb-e2e-local"


@pytest.fixture(scope="module")
def local_vars(tmp_path_factory) -> dict[str, object]:
    return {
        "workbench_name": NAME,
        "notebook_port": free_port(),
        "workbench_outputs_dir": str(tmp_path_factory.mktemp("outputs")),
    }


TINY_RUN = {"run_epochs": 1, "run_image_size": 32, "run_limit": 200, "run_batch_size": 32}


def test_local_target_lifecycle(repo_root, ansible_env, docker_client, local_vars) -> None:
    forget_host_outputs(NAME)
    site = run_playbook(repo_root, "site.yml", ansible_env, local_vars)
    assert site.rc == 0, site.tail()
    assert "Device: CPU" in site.output
    assert f"http://127.0.0.1:{local_vars['notebook_port']}" in site.output
    container = docker_client.containers.get(NAME)
    assert container.status == "running"
    image_id = container.image.id

    again = run_playbook(repo_root, "site.yml", ansible_env, local_vars)
    assert again.rc == 0, again.tail()
    assert again.changed == 0, again.tail(120)
    assert docker_client.containers.get(NAME).id == container.id

    run = run_playbook(repo_root, "playbooks/run.yml", ansible_env, {**local_vars, **TINY_RUN})
    assert run.rc == 0, run.tail()
    outputs = Path(str(local_vars["workbench_outputs_dir"]))
    (run_dir,) = (outputs / "localhost" / NAME).iterdir()  # keyed by host and workbench
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 1
    environment = json.loads((run_dir / "environment.json").read_text())
    assert environment["image_id"] == image_id
    for produced in ("transfer_learning.ipynb", "curves.png", "history.csv", "model.pt"):
        assert (run_dir / produced).stat().st_size > 0, produced

    rerun = run_playbook(repo_root, "playbooks/run.yml", ansible_env, {**local_vars, **TINY_RUN})
    assert rerun.rc == 0, rerun.tail()
    assert rerun.changed == 0, rerun.tail(80)

    down = run_playbook(repo_root, "playbooks/teardown.yml", ansible_env, local_vars)
    assert down.rc == 0, down.tail()
    assert NAME not in {c.name for c in docker_client.containers.list(all=True)}
    docker_client.images.get(image_id)  # the image stays for the next start
    assert (run_dir / "metrics.json").exists()  # nothing the user made is lost

    down_again = run_playbook(repo_root, "playbooks/teardown.yml", ansible_env, local_vars)
    assert down_again.rc == 0, down_again.tail()
    assert down_again.changed == 0, down_again.tail(80)
