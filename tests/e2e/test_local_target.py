"""site.yml end to end on this machine: the default target, as `make demo` runs it.

Each run has its own workbench name, so its container and host directory (the notebook
role's default, /var/lib/wyvern/<name>) are new: nothing an earlier run left can make a
notebook run look done. Both are removed before and after, and a failure to remove them
fails the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from tests.support.cleanup import remove_workbench
from tests.support.gpu import HAS_GPU
from tests.support.outputs import host_notebook_home, run_outputs_dir
from tests.support.playbook import PlaybookRun, run_playbook
from tests.support.ports import reserved_port

HOST = "localhost"
TINY_RUN = {"run_epochs": 1, "run_image_size": 32, "run_limit": 200, "run_batch_size": 32}


@dataclass
class Workbench:
    name: str
    home: Path  # the host directory, as the notebook role derives it from the name
    outputs: Path  # workbench_outputs_dir on the control node
    vars: dict[str, object]

    def run_dir(self, run_id: str | None = None) -> Path:
        return run_outputs_dir(self.outputs, HOST, self.name, run_id)

    def run_ids(self) -> set[str]:
        base = self.run_dir()
        return {p.name for p in base.iterdir()} if base.exists() else set()


def _remove(docker_client, workbench: Workbench) -> None:
    remove_workbench(docker_client, workbench.name)
    if workbench.home.exists():
        shutil.rmtree(workbench.home)  # errors propagate: a leftover would fake a finished run
    assert not workbench.home.exists()


@pytest.fixture
def workbench(docker_client, notebook_image: str, tmp_path: Path) -> Iterator[Workbench]:
    """A workbench of its own; the shared image is built (or found) first, under a lock."""
    name = f"wb-e2e-{secrets.token_hex(4)}"
    with reserved_port() as port:
        bench = Workbench(
            name=name,
            home=host_notebook_home(name),
            outputs=tmp_path / "outputs",
            vars={
                "workbench_name": name,
                "notebook_port": port,
                "workbench_outputs_dir": str(tmp_path / "outputs"),
            },
        )
        _remove(docker_client, bench)
        try:
            yield bench
        finally:
            _remove(docker_client, bench)


def _executed(run: PlaybookRun) -> bool:
    """Whether this playbook run really executed the notebook (the papermill task changed)."""
    header = re.search(r"^TASK \[(\S+ : )?Execute the notebook with papermill.*$", run.output, re.M)
    if header is None:
        return False
    task_output = run.output[header.end() :].split("TASK [", 1)[0]
    return "changed: [localhost]" in task_output


def _papermill_times(run_dir: Path) -> tuple[float, float]:
    """When papermill started and ended executing the fetched notebook (epoch seconds)."""
    notebook = json.loads((run_dir / "transfer_learning.ipynb").read_text())
    meta = notebook["metadata"]["papermill"]
    assert meta["exception"] in (None, False), meta
    return tuple(
        datetime.fromisoformat(meta[key]).timestamp() for key in ("start_time", "end_time")
    )


def _make_image_folder(root: Path) -> None:
    """A two-class ImageFolder (train/ and val/) the notebook user can read."""
    from PIL import Image

    for split, count in (("train", 8), ("val", 4)):
        for label, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                shade = tuple(max(0, c - 6 * i) for c in colour)
                Image.new("RGB", (16, 16), shade).save(folder / f"{i}.png")
    for path in [root, *root.rglob("*")]:
        os.chown(path, 1000, 1000)


def test_local_target_lifecycle(repo_root, ansible_env, docker_client, workbench) -> None:
    started = time.time()
    wb = workbench

    # A dry run on a fresh machine plans without failing and changes nothing.
    plan = run_playbook(repo_root, "site.yml", ansible_env, wb.vars, check=True)
    assert plan.rc == 0, plan.tail()
    assert wb.name not in {c.name for c in docker_client.containers.list(all=True)}
    assert not wb.home.exists(), sorted(p.name for p in wb.home.iterdir())

    site = run_playbook(repo_root, "site.yml", ansible_env, wb.vars)
    assert site.rc == 0, site.tail()
    # The device follows the machine: CPU here unless the product's GPU rule finds one.
    assert ("Device: CPU" in site.output) is not HAS_GPU, site.tail()
    assert f"http://127.0.0.1:{wb.vars['notebook_port']}" in site.output
    container = docker_client.containers.get(wb.name)
    assert container.status == "running"
    image_id = container.image.id

    # On the converged host, a dry run and a real run both change nothing.
    dry = run_playbook(repo_root, "site.yml", ansible_env, wb.vars, check=True)
    assert dry.rc == 0, dry.tail()
    assert dry.changed == 0, dry.tail(120)
    again = run_playbook(repo_root, "site.yml", ansible_env, wb.vars)
    assert again.rc == 0, again.tail()
    assert again.changed == 0, again.tail(120)
    assert docker_client.containers.get(wb.name).id == container.id

    # A bad parameter stops run.yml before anything runs, naming what to fix.
    bad = run_playbook(repo_root, "playbooks/run.yml", ansible_env, {**wb.vars, "run_epochs": 0})
    assert bad.rc != 0
    assert "Bad run parameters: run_epochs" in " ".join(bad.output.split()), bad.tail()
    assert "Execute the notebook" not in bad.output
    assert wb.run_ids() == set()

    run = run_playbook(repo_root, "playbooks/run.yml", ansible_env, {**wb.vars, **TINY_RUN})
    assert run.rc == 0, run.tail()
    assert _executed(run), run.tail(80)
    (run_id,) = wb.run_ids()
    run_dir = wb.run_dir(run_id)
    first_start, first_end = _papermill_times(run_dir)
    assert started < first_start <= first_end <= time.time()  # executed now, by this test
    assert (run_dir / "metrics.json").stat().st_mtime > started
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 1
    assert metrics["weights"] == "none" and metrics["classes"] == [str(d) for d in range(10)]
    assert metrics["device"].startswith("cuda" if HAS_GPU else "cpu"), metrics["device"]
    environment = json.loads((run_dir / "environment.json").read_text())
    assert environment["image_id"] == image_id
    for produced in ("transfer_learning.ipynb", "curves.png", "history.csv", "model.pt"):
        assert (run_dir / produced).stat().st_size > 0, produced
    # The host's copy is marked fetched (the idle agent's rule: newer than all it holds),
    # the mark stays on the host, and the runs page lists the run.
    host_run = wb.home / "outputs" / run_id
    mark = (host_run / ".fetched").stat().st_mtime
    assert all(mark >= f.stat().st_mtime for f in host_run.iterdir()), sorted(host_run.iterdir())
    assert not (run_dir / ".fetched").exists()
    assert run_id in (wb.outputs / "index.html").read_text()

    # The same run again is found done; run_force executes it again.
    rerun = run_playbook(repo_root, "playbooks/run.yml", ansible_env, {**wb.vars, **TINY_RUN})
    assert rerun.rc == 0, rerun.tail()
    assert rerun.changed == 0, rerun.tail(80)
    assert _papermill_times(run_dir) == (first_start, first_end)
    forced = run_playbook(
        repo_root, "playbooks/run.yml", ansible_env, {**wb.vars, **TINY_RUN, "run_force": True}
    )
    assert forced.rc == 0, forced.tail()
    assert _executed(forced), forced.tail(80)
    assert wb.run_ids() == {run_id}  # the same run, executed again
    assert _papermill_times(run_dir)[0] >= first_end

    # Another data set (an ImageFolder path in the container) and a weights file.
    _make_image_folder(wb.home / "data" / "colours")
    weights = f"/workspace/outputs/{run_id}/model.pt"
    custom = run_playbook(
        repo_root,
        "playbooks/run.yml",
        ansible_env,
        {
            **wb.vars,
            **TINY_RUN,
            "run_dataset": "/workspace/data/colours",
            "run_weights": weights,
        },
    )
    assert custom.rc == 0, custom.tail()
    assert _executed(custom), custom.tail(80)
    (custom_id,) = wb.run_ids() - {run_id}
    custom_metrics = json.loads((wb.run_dir(custom_id) / "metrics.json").read_text())
    assert custom_metrics["classes"] == ["blue", "red"]
    assert custom_metrics["num_train"] == 16 and custom_metrics["num_val"] == 8
    assert custom_metrics["weights"] == weights

    # Outputs only the workbench has: a file added to a fetched run, a run never fetched.
    late = wb.home / "outputs" / run_id / "notes-after-fetch.txt"
    late.write_text("written in Jupyter after run.yml fetched the run\n")
    unfetched = wb.home / "outputs" / "interactive-session" / "result.txt"
    unfetched.parent.mkdir()
    unfetched.write_text("made by hand in the notebook\n")

    # site.yml started the idle agent and the hard limit for this workbench.
    assert agent_processes(wb.name), "no auto-stop agent runs for the workbench"
    down = run_playbook(repo_root, "playbooks/teardown.yml", ansible_env, wb.vars)
    assert down.rc == 0, down.tail()
    assert wb.name not in {c.name for c in docker_client.containers.list(all=True)}
    # Teardown leaves no agent behind watching a workbench that is gone.
    assert not agent_processes(wb.name), agent_processes(wb.name)
    docker_client.images.get(image_id)  # the image stays for the next start
    # Nothing the user made is lost: teardown fetched what only the workbench had.
    assert (wb.run_dir(run_id) / "notes-after-fetch.txt").read_text() == late.read_text()
    assert (wb.run_dir("interactive-session") / "result.txt").read_text() == unfetched.read_text()
    assert (wb.run_dir(run_id) / "metrics.json").exists()

    down_again = run_playbook(repo_root, "playbooks/teardown.yml", ansible_env, wb.vars)
    assert down_again.rc == 0, down_again.tail()
    assert down_again.changed == 0, down_again.tail(80)


def agent_processes(name: str) -> list[str]:
    """Command lines of running auto-stop loops for this workbench (its config names it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            line = " ".join(a.decode(errors="replace") for a in argv if a)
            if "wyvern_" in line and f"/{name}.json" in line:
                found.append(line)
    return found
