"""notebook_container's code is a package of module_utils; AnsiballZ must ship all of it.

A real ansible-playbook run (no notebook image needed) keeps the AnsiballZ wrapper it sent,
and the payload inside must hold every file of plugins/module_utils/_notebook_container/.
"""

from __future__ import annotations

import base64
import io
import json
import re
import secrets
import subprocess
import zipfile
from pathlib import Path

PACKAGE = "plugins/module_utils/_notebook_container"


def test_a_playbook_run_ships_the_whole_package(
    repo_root: Path, ansible_env: dict[str, str], tmp_path: Path
) -> None:
    name = f"wyvern-test-module-ansiballz-{secrets.token_hex(3)}"
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        f"""
- name: Run notebook_container through AnsiballZ
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Remove a container that does not exist
      wyvern.workbench.notebook_container:
        name: {name}
        state: absent
      register: gone
    - name: Keep the result
      ansible.builtin.copy:
        content: "{{{{ gone | to_json }}}}"
        dest: {tmp_path / "result.json"}
        mode: "0600"
"""
    )
    remote_tmp = tmp_path / "remote_tmp"
    env = dict(
        ansible_env,
        ANSIBLE_KEEP_REMOTE_FILES="1",
        ANSIBLE_REMOTE_TMP=str(remote_tmp),
        ANSIBLE_NOCOLOR="1",
    )
    proc = subprocess.run(
        [
            "ansible-playbook",
            str(playbook),
            "-e",
            "ansible_python_interpreter={{ ansible_playbook_python }}",
        ],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["changed"] is False and result["actions"] == []

    (wrapper,) = remote_tmp.glob("*/AnsiballZ_notebook_container.py")
    payload = re.search(r"^zip_data='([A-Za-z0-9+/=]+)'", wrapper.read_text(), re.M).group(1)
    shipped = set(zipfile.ZipFile(io.BytesIO(base64.b64decode(payload))).namelist())
    prefix = "ansible_collections/wyvern/workbench/"
    wanted = {prefix + str(p.relative_to(repo_root)) for p in (repo_root / PACKAGE).glob("*.py")}
    assert len(wanted) >= 6
    assert wanted <= shipped, sorted(wanted - shipped)
    assert prefix + "plugins/module_utils/_gpu.py" in shipped
