"""`ansible-galaxy collection build` makes a tarball that installs and resolves by FQCN."""

from __future__ import annotations

import subprocess
import tarfile


def test_collection_builds_installs_and_resolves(tmp_path, repo_root, ansible_env) -> None:
    subprocess.run(
        ["ansible-galaxy", "collection", "build", "--force", "--output-path", str(tmp_path)],
        cwd=repo_root,
        env=ansible_env,
        check=True,
        capture_output=True,
    )
    (tarball,) = tmp_path.glob("wyvern-workbench-*.tar.gz")
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert "galaxy.yml" not in names and "MANIFEST.json" in names
    assert not any(n.startswith((".venv", "collections/", "outputs/")) for n in names)
    assert "roles/notebook/tasks/main.yml" in names

    install_dir = tmp_path / "installed"
    subprocess.run(
        [
            "ansible-galaxy",
            "collection",
            "install",
            "--force",
            "--no-deps",
            "-p",
            str(install_dir),
            str(tarball),
        ],
        cwd=tmp_path,
        env=ansible_env,
        check=True,
        capture_output=True,
    )
    # A playbook outside this checkout finds the roles through the installed collection only.
    play = tmp_path / "play.yml"
    play.write_text(
        "- hosts: localhost\n  gather_facts: false\n  roles:\n"
        "    - wyvern.workbench.docker_engine\n    - wyvern.workbench.notebook\n"
    )
    env = {**ansible_env, "ANSIBLE_COLLECTIONS_PATH": str(install_dir)}
    env.pop("ANSIBLE_CONFIG")
    proc = subprocess.run(
        ["ansible-playbook", "--syntax-check", str(play)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
