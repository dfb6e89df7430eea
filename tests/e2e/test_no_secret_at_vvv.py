"""Every local playbook at -vvv with a known token: the token is nowhere a user or another
account could read it (issue 11).

site.yml, playbooks/run.yml and playbooks/teardown.yml run at verbosity 3
(ANSIBLE_VERBOSITY=3 is -vvv); playbooks/tunnel.yml is for the aws target only (it forwards
to an SSH alias) and has no local counterpart. The token must not appear in their output,
the outputs fetched to the control node, the notebook image's history or configuration, or
the container's `docker inspect`.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest

from tests.support.cleanup import remove_workbench
from tests.support.playbook import run_playbook

TINY_RUN = {"run_epochs": 1, "run_image_size": 32, "run_limit": 100, "run_batch_size": 32}


@pytest.mark.slow
def test_the_token_appears_nowhere_at_vvv(
    repo_root: Path, ansible_env: dict[str, str], docker_client, tmp_path: Path, notebook_image: str
) -> None:
    name = f"wb-e2e-vvv-{secrets.token_hex(3)}"
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    token = f"wyvern-vvv-token-{secrets.token_hex(16)}"
    token_file = home / "token"
    token_file.write_text(token + "\n")
    os.chmod(token_file, 0o600)
    outputs = tmp_path / "outputs"
    extra = {
        "workbench_name": name,
        "notebook_home": str(home),
        "workbench_outputs_dir": str(outputs),
    }
    env = dict(ansible_env, ANSIBLE_VERBOSITY="3")
    seen: dict[str, str] = {}
    try:
        site = run_playbook(repo_root, "site.yml", env, extra)
        seen["site.yml"] = site.output
        assert site.rc == 0, site.tail(80)
        assert "ESTABLISH LOCAL CONNECTION" in site.output  # it really ran at -vvv
        container = docker_client.containers.get(name)
        assert notebook_image in container.image.tags  # the image the test session built
        # The notebook answers with exactly this token: it is the live one.
        code, _ = container.exec_run(
            [
                "python",
                "-c",
                "import urllib.request, sys; "
                "r = urllib.request.Request('http://127.0.0.1:8888/api/status', "
                "headers={'Authorization': 'token ' + open('/run/secrets/jupyter_token').read()}); "
                "sys.exit(0 if urllib.request.urlopen(r).status == 200 else 1)",
            ]
        )
        assert code == 0
        assert (home / "token.d" / "jupyter_token").read_text() == token

        run = run_playbook(repo_root, "playbooks/run.yml", env, {**extra, **TINY_RUN})
        seen["playbooks/run.yml"] = run.output
        assert run.rc == 0, run.tail(80)

        container.reload()
        seen["docker inspect (container)"] = json.dumps(container.attrs)
        image = container.image
        seen["docker inspect (image)"] = json.dumps(image.attrs)
        seen["docker history"] = json.dumps(docker_client.api.history(image.id))

        down = run_playbook(repo_root, "playbooks/teardown.yml", env, extra)
        seen["playbooks/teardown.yml"] = down.output
        assert down.rc == 0, down.tail(80)
    finally:
        remove_workbench(docker_client, name)

    fetched = [path for path in outputs.rglob("*") if path.is_file()]
    assert any(path.name == "metrics.json" for path in fetched), fetched
    for path in fetched:
        seen[str(path)] = path.read_bytes().decode("utf-8", "replace")

    leaks = [where for where, text in seen.items() if token in text]
    assert leaks == [], f"the token appears in: {leaks}"
