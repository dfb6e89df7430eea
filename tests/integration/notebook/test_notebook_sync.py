"""The user's notebooks, round trip, against the real Jupyter in the real image.

Edits are saved through Jupyter's contents API exactly as the browser saves them (PUT
/api/contents/<path> with the token). The notebook is re-created and the edit is still
there; playbooks/sync.yml brings it home; a notebook changed on both sides comes back as
two named files, never one silently overwritten; teardown syncs before it removes.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.playbook import PlaybookRun, run_playbook
from tests.support.ports import reserved_port

from .conftest import PREFIX, remove_container

NOTEBOOK = "transfer_learning.ipynb"
ROLE_PLAYBOOK = """\
- name: Run the notebook role
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  roles:
    - role: wyvern.workbench.notebook
"""


class Workbench:
    def __init__(self, root: Path, env: dict[str, str], tmp: Path, name: str, port: int) -> None:
        self.root, self.env, self.tmp, self.name, self.port = root, env, tmp, name, port
        self.home = tmp / "home"
        self.project = tmp / "project" / "notebooks"
        self.outputs = tmp / "outputs"
        self.playbook = tmp / "notebook.yml"
        self.playbook.write_text(ROLE_PLAYBOOK)
        self.settings: dict[str, Any] = {
            "workbench_name": name,
            "workbench_become": False,
            "notebook_home": str(self.home),
            "notebook_port": port,
            "workbench_notebooks_dir": str(self.project),
            "notebook_sync_state_file": str(tmp / "state" / "notebooks-sync.json"),
            "workbench_outputs_dir": str(self.outputs),
        }

    def play(
        self, playbook: str | Path, env: dict[str, str] | None = None, **more: Any
    ) -> PlaybookRun:
        env = {**self.env, **(env or {})}
        return run_playbook(self.root, str(playbook), env, {**self.settings, **more})

    def start(self, env: dict[str, str] | None = None, **more: Any) -> PlaybookRun:
        run = self.play(self.playbook, env, **more)
        assert run.rc == 0, run.tail(80)
        return run

    # -- Jupyter, as the browser talks to it

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        token = (self.home / "token").read_text().strip()
        headers = {"Authorization": f"token {token}"}
        return requests.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    def read(self, path: str) -> dict[str, Any]:
        reply = self.api("GET", f"/api/contents/{path}?type=notebook&content=1")
        assert reply.status_code == 200, reply.text
        return reply.json()

    def save(self, path: str, notebook: dict[str, Any]) -> None:
        reply = self.api(
            "PUT",
            f"/api/contents/{path}",
            json={"type": "notebook", "format": "json", "content": notebook},
        )
        assert reply.status_code in (200, 201), reply.text


def with_marker(notebook: dict[str, Any], marker: str) -> dict[str, Any]:
    edited = json.loads(json.dumps(notebook))
    edited["cells"].insert(
        0, {"cell_type": "markdown", "metadata": {}, "source": [f"# {marker}"], "id": marker}
    )
    return edited


def markers(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return [c.get("id") for c in cells if c["cell_type"] == "markdown"]


@pytest.fixture
def workbench(
    tmp_path: Path, repo_root: Path, ansible_env: dict[str, str], docker_client, notebook_image
) -> Iterator[Workbench]:
    name = f"{PREFIX}sync-{secrets.token_hex(3)}"
    remove_container(docker_client, name)
    with reserved_port() as port:
        yield Workbench(repo_root, ansible_env, tmp_path, name, port)
    remove_container(docker_client, name)
    shutil.rmtree(tmp_path / "home", ignore_errors=True)  # files owned by uid 1000


def test_notebooks_round_trip_through_jupyter(workbench: Workbench, docker_client) -> None:
    wb = workbench
    first = wb.start()
    # The project starts with the example notebook, which JupyterLab opens, writable.
    assert (wb.project / NOTEBOOK).is_file()
    listing = wb.api("GET", "/api/contents/notebooks").json()
    assert {item["name"]: item["writable"] for item in listing["content"]} == {NOTEBOOK: True}
    page = wb.api("GET", "/lab").text
    config = json.loads(
        re.search(r'id="jupyter-config-data"[^>]*>(.*?)</script>', page, re.S).group(1)
    )
    assert config["preferredPath"] == "notebooks"
    # No announcement prompt, no news feed, no update check against the internet.
    assert "@jupyterlab/apputils-extension:announcements" in config["disabledExtensions"]
    assert config["news"] == {"disabled": True}
    assert wb.api("GET", "/lab/api/news").json() == {"news": []}
    assert wb.api("GET", "/lab/api/update").json() == {"notification": None}
    assert "pushed to the workbench: transfer_learning.ipynb" in first.output

    # Saved in the browser: an edit of the example, and a notebook outside notebooks/.
    original = wb.read(f"notebooks/{NOTEBOOK}")["content"]
    wb.save(f"notebooks/{NOTEBOOK}", with_marker(original, "edited-in-jupyter"))
    wb.save("Untitled-outside.ipynb", with_marker(original, "saved-at-the-root"))

    # Any drift re-creates the container (here an extra variable): nothing is lost, even
    # without the sync that the role runs before it starts the container.
    before = docker_client.containers.get(wb.name).id
    recreated = wb.start(
        {"ANSIBLE_SKIP_TAGS": "notebook_sync"}, notebook_env={"WYVERN_TEST_RECREATE": "1"}
    )
    assert "Sync the notebooks both ways" not in recreated.output
    assert docker_client.containers.get(wb.name).id != before
    assert "edited-in-jupyter" in [
        c.get("id") for c in wb.read(f"notebooks/{NOTEBOOK}")["content"]["cells"]
    ]
    assert wb.read("Untitled-outside.ipynb")["content"]["cells"][0]["id"] == "saved-at-the-root"

    # playbooks/sync.yml brings the edit home, and the stray notebook with the outputs.
    synced = wb.play("playbooks/sync.yml")
    assert synced.rc == 0, synced.tail(80)
    assert markers(wb.project / NOTEBOOK)[0] == "edited-in-jupyter"
    stray = wb.outputs / "localhost" / wb.name / "workspace" / "Untitled-outside.ipynb"
    assert markers(stray)[0] == "saved-at-the-root"
    assert "SAVED OUTSIDE notebooks/: Untitled-outside.ipynb" in synced.output
    assert "pulled to the control node: transfer_learning.ipynb" in synced.output
    again = wb.play("playbooks/sync.yml")
    assert again.rc == 0 and again.changed == 0, again.tail(80)

    # A file pushed from the control node is the notebook user's to save.
    (wb.project / "mine.ipynb").write_text(json.dumps(original))
    pushed = wb.play("playbooks/sync.yml")
    assert pushed.rc == 0, pushed.tail(80)
    wb.save("notebooks/mine.ipynb", with_marker(original, "saved-over-a-pushed-file"))

    # The same notebook changed on both sides: both versions survive, the conflict is named.
    local = json.loads((wb.project / NOTEBOOK).read_text())
    (wb.project / NOTEBOOK).write_text(json.dumps(with_marker(local, "edited-on-laptop")))
    remote = wb.read(f"notebooks/{NOTEBOOK}")["content"]
    wb.save(f"notebooks/{NOTEBOOK}", with_marker(remote, "edited-on-workbench"))

    # Teardown syncs before it removes anything.
    down = wb.play("playbooks/teardown.yml")
    assert down.rc == 0, down.tail(80)
    assert wb.name not in {c.name for c in docker_client.containers.list(all=True)}
    copies = sorted(wb.project.glob("transfer_learning.remote-conflict-*.ipynb"))
    assert len(copies) == 1, sorted(p.name for p in wb.project.iterdir())
    assert markers(wb.project / NOTEBOOK)[0] == "edited-on-laptop"
    assert markers(copies[0])[0] == "edited-on-workbench"
    assert f"CONFLICT {NOTEBOOK}" in down.output and copies[0].name in down.output
    # ... on both sides: the workbench's folder holds both versions too.
    host = wb.home / "workspace" / "notebooks"
    assert markers(host / NOTEBOOK)[0] == "edited-on-laptop"
    assert markers(host / copies[0].name)[0] == "edited-on-workbench"
    assert markers(wb.project / "mine.ipynb")[0] == "saved-over-a-pushed-file"
