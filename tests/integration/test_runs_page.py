"""The runs page: playbooks/runs.yml over real run outputs, opened in headless Chromium.

One run is trained for real by the workload's CLI (tiny, on CPU: real metrics, curves and
confusion matrix); the others are copies of it as other hosts and workbenches would have
fetched them, one with a hostile run name and parameters (users choose both). The page
must load with every image drawn, every link answering, and nothing the user wrote run as
markup.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import pytest

from tests.support.browser import chromium_page, missing_browser, screenshot
from tests.support.outputs import run_outputs_dir
from tests.support.playbook import run_playbook

HOSTILE_RUN = 'r #2 ?"><img src=x onerror=alert(1)>'
HOSTILE_DATA = "/workspace/data/<script>alert('data')</script>"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Path:
    """A run's outputs as the workload writes them (about 30 s on two CPU cores)."""
    base = tmp_path_factory.mktemp("trained")
    env = {"PYTHONPATH": str(repo_root / "workload"), "PATH": "/usr/bin:/bin"}
    cli = [sys.executable, "-m", "transfer_learning"]
    subprocess.run(
        [*cli, "make-dataset", "digits", str(base / "data"), "--size", "16"],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    subprocess.run(
        [
            *cli,
            "train",
            "--data",
            str(base / "data"),
            "--output-dir",
            str(base / "out"),
            "--run-id",
            "finetune-real",
            "--weights",
            "none",
            "--epochs",
            "2",
            "--image-size",
            "16",
            "--limit",
            "40",
            "--workers",
            "0",
            "--device",
            "cpu",
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    run = base / "out" / "finetune-real"
    # The executed notebook that run.yml fetches beside them (here: the workload's own).
    shutil.copy(repo_root / "workload" / "notebooks" / "transfer_learning.ipynb", run)
    return run


@pytest.fixture
def outputs(tmp_path: Path, trained_run: Path) -> Path:
    root = tmp_path / "outputs"
    shutil.copytree(trained_run, run_outputs_dir(root, "localhost", "workbench", "finetune-real"))
    gpu = run_outputs_dir(root, "wyvern-gpu-box-me", "gpu-box", "finetune-copy")
    shutil.copytree(trained_run, gpu)
    (gpu / "cost.json").write_text(
        json.dumps({"instance_type": "g4dn.xlarge", "usd_per_hour": 0.526})
    )
    hostile = run_outputs_dir(root, "localhost", "workbench", HOSTILE_RUN)
    shutil.copytree(trained_run, hostile)
    environment = json.loads((hostile / "environment.json").read_text())
    environment["arguments"]["data"] = HOSTILE_DATA
    (hostile / "environment.json").write_text(json.dumps(environment))
    (hostile / "transfer_learning.ipynb").unlink()  # no papermill parameters: the CLI's
    return root


@pytest.fixture
def served(outputs: Path) -> Iterator[str]:
    """The outputs folder over HTTP on loopback, to ask each link for its target."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(outputs))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_runs_page_shows_every_run_and_every_image_and_link_resolves(
    repo_root: Path, ansible_env: dict[str, str], outputs: Path, served: str
) -> None:
    problem = missing_browser()
    if problem:
        pytest.fail(problem)
    extra = {"workbench_outputs_dir": str(outputs)}
    first = run_playbook(repo_root, "playbooks/runs.yml", ansible_env, extra, timeout=300)
    assert first.rc == 0, first.tail()
    assert first.changed == 1, first.tail()
    page = outputs / "index.html"
    assert f"Page: {page}" in first.output
    table = first.output.split("msg: |-", 1)[1]
    for expected in ("localhost", "wyvern-gpu-box-me", "finetune-real", "finetune-copy"):
        assert expected in table, first.tail()
    metrics = json.loads((outputs / "localhost/workbench/finetune-real/metrics.json").read_text())
    assert f"{metrics['best_val_acc']:.3f}" in table
    # The g4dn run's cost: its wall time at 0.526 USD/h.
    assert f"{metrics['wall_time_s'] * 0.526 / 3600:.3f} USD" in table, first.tail()
    # Nothing changed: the page is the same, byte for byte.
    again = run_playbook(repo_root, "playbooks/runs.yml", ansible_env, extra, timeout=300)
    assert again.rc == 0 and again.changed == 0, again.tail()

    with chromium_page() as browser:
        dialogs: list[str] = []
        browser.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        browser.goto(page.as_uri())
        browser.wait_for_load_state("load")
        rows = browser.locator("tr.run")
        assert rows.count() == 3
        images = browser.evaluate(
            "[...document.images].map(i => ({src: i.getAttribute('src'),"
            " drawn: i.complete && i.naturalWidth > 0}))"
        )
        links = browser.evaluate("[...document.links].map(a => a.getAttribute('href'))")
        text = browser.locator("body").inner_text()
        screenshot(browser, "runs-page")
        assert len(images) == 6, images  # curves and confusion matrix of each run
        assert all(image["drawn"] for image in images), images
        assert dialogs == []  # no user text ran as script
        assert browser.locator("script").count() == 0
        assert HOSTILE_RUN in text and HOSTILE_DATA in text
        assert "g4dn.xlarge at 0.526 USD/h" in text
        # Every link (plots, metrics, executed notebooks) answers at its target.
        assert len(links) == 6 + 3 + 2, links
        for href in links:
            response = browser.request.get(urljoin(served, href))
            assert response.status == 200, (href, response.status)


def _module(repo_root: Path, ansible_env: dict[str, str], args: dict) -> dict:
    env = dict(
        ansible_env, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1"
    )
    proc = subprocess.run(
        ["ansible", "localhost", "-m", "wyvern.workbench.runs_page", "-a", json.dumps(args)],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_the_module_records_a_runs_price_once_and_refuses_a_foreign_directory(
    repo_root: Path, ansible_env: dict[str, str], tmp_path: Path
) -> None:
    outputs = tmp_path / "outputs"
    run = run_outputs_dir(outputs, "wyvern-gpu-box-me", "gpu-box", "finetune-1")
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"device": "cuda:0", "wall_time_s": 1800}))
    cost = {"run_dir": str(run), "usd_per_hour": 0.526, "instance_type": "g4dn.xlarge"}

    first = _module(repo_root, ansible_env, {"outputs_dir": str(outputs), "cost": cost})
    assert first["changed"] is True, first
    assert first["runs"][0]["cost_usd"] == 0.263
    assert "0.263 USD" in "\n".join(first["table"])
    second = _module(repo_root, ansible_env, {"outputs_dir": str(outputs), "cost": cost})
    assert second["changed"] is False, second

    elsewhere = {**cost, "run_dir": str(tmp_path / "elsewhere")}
    bad = _module(repo_root, ansible_env, {"outputs_dir": str(outputs), "cost": elsewhere})
    assert bad.get("failed") is True
    assert "cost.run_dir" in bad["msg"] and "is not under outputs_dir" in bad["msg"]
    assert not (tmp_path / "elsewhere").exists()
