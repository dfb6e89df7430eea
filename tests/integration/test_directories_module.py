"""The `directories` module on this machine: several folders with owner, group and mode in
one call; check mode changes nothing; a second run changes nothing; drift is put back."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml


def _run(tmp_path: Path, repo_root: Path, ansible_env: dict[str, str], *flags: str) -> dict:
    root = tmp_path / "home"
    playbook = tmp_path / "dirs.yml"
    paths = [
        {"path": str(root), "owner": "0", "group": "0", "mode": "0755"},
        {"path": str(root / "outputs"), "owner": "1000", "group": "1000", "mode": "0775"},
        {"path": str(root / "build"), "mode": "0700"},
    ]
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "hosts": "localhost",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "Create the folders",
                            "wyvern.workbench.directories": {"paths": paths},
                        }
                    ],
                }
            ]
        )
    )
    proc = subprocess.run(
        ["ansible-playbook", *flags, str(playbook)],
        cwd=repo_root,
        env={**ansible_env, "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_folders_in_one_call(tmp_path: Path, repo_root: Path, ansible_env) -> None:
    root = tmp_path / "home"
    planned = _run(tmp_path, repo_root, ansible_env, "--check")
    assert planned["changed"] and len(planned["created"]) == 3
    assert not root.exists()

    made = _run(tmp_path, repo_root, ansible_env)
    assert made["changed"] and made["created"] == planned["created"]
    modes = {p.name: (p.stat().st_mode & 0o777, p.stat().st_uid) for p in (root, *root.iterdir())}
    assert modes == {"home": (0o755, 0), "outputs": (0o775, 1000), "build": (0o700, 0)}

    assert not _run(tmp_path, repo_root, ansible_env)["changed"]

    (root / "build").chmod(0o777)
    fixed = _run(tmp_path, repo_root, ansible_env)
    assert fixed["changed_paths"] == [str(root / "build")] and not fixed["created"]
    assert (root / "build").stat().st_mode & 0o777 == 0o700
