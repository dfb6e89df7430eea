#!/usr/bin/env python3
# Copyright: Wyvern workbench team
# Apache-2.0
"""Run ``ansible-test sanity`` on this collection with the project's own Python packages.

ansible-test runs each sanity test in a virtual environment of its own under
``~/.ansible/test/venv``, which it creates empty and fills by downloading pip's bootstrap
script from ci-files.testing.ansible.com, with an environment scrubbed of pip's settings.
Neither works on a machine that reaches only PyPI (or a mirror). ansible-test reuses an
environment whose ``marker.txt`` exists, so this script makes that environment first, at
the path ansible-test computes for it, as a thin venv whose ``.pth`` file points at the
running interpreter's site-packages: the test's requirements (voluptuous,
antsibull-docs-parser, ...) come from the project's test extras (``make test-deps``),
installed by ordinary pip with its ordinary settings.

ansible-test must run inside ``ansible_collections/NAMESPACE/NAME``; the repository root
is the collection, so its files (tracked and untracked, not ignored) are copied into such
a tree in a temporary directory and the test runs there.

Usage: scripts/sanity.py [--test NAME ...] (default: the tests in ``DEFAULT_TESTS``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE, NAME = "wyvern", "workbench"
# validate-modules checks the modules' documentation against their argument_spec;
# the others need no packages beyond ansible-core. (shebang is left out: it wants the
# scripts/ tools, which are not Ansible content, to have no shebang.)
DEFAULT_TESTS = ["validate-modules", "ansible-doc", "compile", "symlinks"]
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def venv_path(test: str) -> tuple[Path, list[str]]:
    """Where ansible-test looks for the test's environment, and the packages it wants."""
    from ansible_test._internal.commands.sanity import hash_pip_commands
    from ansible_test._internal.host_configs import NativePythonConfig
    from ansible_test._internal.python_requirements import PipInstall, collect_requirements

    python = NativePythonConfig(version=PYTHON, path=sys.executable)
    commands = collect_requirements(
        python=python,
        controller=True,
        command=None,
        ansible=False,
        coverage=False,
        minimize=False,
        sanity=test,
    )
    label = f"sanity.{test}" if commands else "sanity"
    path = Path.home() / ".ansible/test/venv" / label / PYTHON / hash_pip_commands(commands)
    wanted = []
    for command in commands:
        if isinstance(command, PipInstall):
            for _name, text in command.requirements:
                wanted += [
                    line.split("#")[0].strip()
                    for line in text.splitlines()
                    if line.split("#")[0].strip()
                ]
    return path, wanted


def prime(test: str, extra_sites: list[str]) -> None:
    """Make the test's environment: a venv that sees this interpreter's packages."""
    path, wanted = venv_path(test)
    if not wanted:
        return  # ansible-test makes an environment without packages itself, offline
    pth_name = "wyvern-project.pth"
    sites = [sysconfig.get_paths()["purelib"], *extra_sites]
    python = path / "bin/python"
    marker = path / "marker.txt"
    existing = list(path.glob(f"lib/python*/site-packages/{pth_name}"))
    if marker.exists() and not existing:
        return  # made by ansible-test itself (with network access): use it as it is
    if not existing:
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
        site = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        existing = [Path(site, pth_name)]
    # Rewritten every time, so the environment follows the interpreter that runs this.
    existing[0].write_text("".join(f"{site}\n" for site in sites))
    modules = {"antsibull-docs-parser": "antsibull_docs_parser", "pyyaml": "yaml"}
    missing = []
    for requirement in wanted:
        name = requirement.split("==")[0].strip().lower()
        module = modules.get(name, name.replace("-", "_"))
        found = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True)
        if found.returncode != 0:
            missing.append(requirement)
    if missing:
        sys.exit(
            f"sanity test {test} needs {', '.join(missing)} in {sys.executable}; "
            "install the test extras (make test-deps)"
        )
    libyaml = subprocess.run(
        [str(python), "-c", "import yaml; print(bool(getattr(yaml, 'CSafeLoader', None)))"],
        capture_output=True,
        text=True,
    )
    yaml_meta = {"True": True, "False": False}.get(libyaml.stdout.strip())
    (path / "meta.yaml.json").write_text(json.dumps(yaml_meta))
    (path / "meta.install.json").write_text(json.dumps({"primed-by": "scripts/sanity.py"}))
    marker.touch()


def collection_copy(workdir: Path) -> Path:
    """The collection's files (tracked and untracked, not ignored) under ansible_collections."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    dest = workdir / "ansible_collections" / NAMESPACE / NAME
    for relative in filter(None, listing.split("\0")):
        source = ROOT / relative
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the work tree
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    return dest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", action="append", dest="tests", help="sanity test to run")
    parser.add_argument(
        "--site",
        action="append",
        default=[],
        help="another directory of packages for the environments (pip install --target DIR)",
    )
    args, rest = parser.parse_known_args()
    tests = args.tests or DEFAULT_TESTS
    for test in tests:
        prime(test, [str(Path(site).resolve()) for site in args.site])
    ansible_test = Path(sys.executable).parent / "ansible-test"
    with tempfile.TemporaryDirectory(prefix="wyvern-sanity-") as workdir:
        dest = collection_copy(Path(workdir))
        command = [str(ansible_test), "sanity", "--python", PYTHON, "--color", "no"]
        for test in tests:
            command += ["--test", test]
        return subprocess.run(command + rest, cwd=dest).returncode


if __name__ == "__main__":
    sys.exit(main())
