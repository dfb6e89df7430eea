"""JupyterLab in a real browser, on the local target: what a person does after `make demo`.

The notebook is started by the playbooks a user runs (target, notebook, the summary), from
the real image; headless Chromium opens the address the summary prints, with the token from
the file it names, opens the workload's notebook, runs a cell that imports torch and sees
its output in the page, and saves the notebook. A wrong token gets the login page. Screenshots are kept under
tests/output/browser/.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.browser import (
    DEVICE_OUTPUT,
    chromium_page,
    lab_url_from_summary,
    login_page_for_wrong_token,
    missing_browser,
    run_device_cell_in_jupyterlab,
)
from tests.support.cleanup import remove_workbench
from tests.support.gpu import HAS_GPU
from tests.support.outputs import host_notebook_home
from tests.support.playbook import run_playbook
from tests.support.ports import reserved_port

PLAYBOOKS = Path(__file__).resolve().parents[3] / "playbooks"
# site.yml without the host roles (Docker is already here): the user's own playbooks.
START_AND_REPORT = "".join(
    f"- name: {title}\n  ansible.builtin.import_playbook: {PLAYBOOKS / name}\n"
    for title, name in (
        ("Select the workbench host", "target.yml"),
        ("Build and start the notebook", "notebook.yml"),
        ("Report where the notebook is", "report.yml"),
    )
)


@pytest.fixture
def browser_ready() -> None:
    problem = missing_browser()
    if problem:
        pytest.fail(problem)


@pytest.fixture
def started_notebook(
    repo_root: Path, ansible_env: dict[str, str], docker_client, notebook_image: str, tmp_path
) -> Iterator[str]:
    """Start a workbench of this test's own on this machine; yield the summary's output."""
    name = f"wb-browser-{secrets.token_hex(3)}"
    home = host_notebook_home(name)

    def remove() -> None:
        remove_workbench(docker_client, name)
        shutil.rmtree(home, ignore_errors=True)

    playbook = tmp_path / "start.yml"
    playbook.write_text("---\n" + START_AND_REPORT)
    remove()
    with reserved_port() as port:
        try:
            run = run_playbook(
                repo_root,
                str(playbook),
                ansible_env,
                {"workbench_name": name, "notebook_port": port},
                timeout=900,
            )
            assert run.rc == 0, run.tail()
            yield run.output
        finally:
            remove()


def test_jupyterlab_runs_torch_in_a_real_browser(browser_ready, started_notebook: str) -> None:
    lab_url, token_file = lab_url_from_summary(started_notebook)
    token = token_file.read_text().strip()
    assert token not in started_notebook  # the summary names the file, never the token

    with chromium_page() as page:
        shown = run_device_cell_in_jupyterlab(page, lab_url, token, "jupyterlab-local")
    match = DEVICE_OUTPUT.search(shown)
    assert match, shown
    assert match[1] == ("cuda" if HAS_GPU else "cpu"), shown
    assert match[2].startswith("2.14.1"), shown  # the image's torch, not the control node's
    # The edited cell was saved through the UI into the user's persistent notebooks folder.
    saved = requests.get(
        f"{lab_url.removesuffix('/lab')}/api/contents/notebooks/transfer_learning.ipynb",
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert saved.status_code == 200, saved.text
    sources = ["".join(c["source"]) for c in saved.json()["content"]["cells"]]
    assert any("wyvern-device" in src for src in sources), sources[:3]

    with chromium_page() as page:
        landed = login_page_for_wrong_token(page, lab_url, "jupyterlab-local-wrong-token")
    assert landed["path"].endswith("/login"), landed
    assert landed["password_field"] >= 1, landed
    assert "Password or token" in str(landed["text"]), landed
    assert landed["lab_shell"] == 0, landed
