#!/usr/bin/python
# Copyright: Wyvern workbench team
# Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: docker_engine_info
short_description: Ask the Docker daemon for its version and runtimes, and Python for the Docker SDK
version_added: 0.4.0
description:
  - Runs C(docker info) and returns the server's version and its runtimes (empty when the daemon does
    not answer, with the reason), and whether the Python running this module can import the Docker SDK
    for Python (C(docker)), which M(wyvern.workbench.notebook_container) needs.
  - The docker_engine role's one question to the host about Docker; one module run instead of two
    (each is a Python start on the host, paid by every rerun of site.yml, BENCHMARKS.md).
  - Needs neither the SDK nor a running daemon; never fails for their absence.
author:
  - Wyvern workbench team (@wyvern-workbench)
attributes:
  check_mode:
    support: full
    description: Reads only; runs the same in check mode.
  diff_mode:
    support: none
    description: Returns no diff; it changes nothing.
  idempotent:
    support: full
    description: Never changes anything.
options:
  docker_cli:
    description: The Docker command line client to run.
    type: str
    default: docker
"""

EXAMPLES = r"""
- name: Ask about Docker
  wyvern.workbench.docker_engine_info:
  register: engine

- name: Say which Docker answers
  ansible.builtin.debug:
    msg: "Docker {{ engine.version or 'not answering: ' ~ engine.error }}, SDK {{ engine.sdk }}"
"""

RETURN = r"""
version:
  description: The daemon's version, or an empty string when it does not answer.
  returned: always
  type: str
  sample: "20.10.24+dfsg1"
runtimes:
  description: The names of the daemon's runtimes, sorted (empty when it does not answer).
  returned: always
  type: list
  elements: str
  sample: [io.containerd.runc.v2, nvidia, runc]
sdk:
  description: Whether this Python imports the Docker SDK for Python.
  returned: always
  type: bool
  sample: true
error:
  description: Why the daemon did not answer (the client's message), or an empty string.
  returned: always
  type: str
  sample: "Cannot connect to the Docker daemon at unix:///var/run/docker.sock."
"""

import importlib.util
import json
from typing import Any

from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC = {"docker_cli": {"type": "str", "default": "docker"}}

# Go template for `docker info --format`: only the two fields the role reads.
INFO_FORMAT = '{"version": {{json .ServerVersion}}, "runtimes": {{json .Runtimes}}}'


def parse_info(rc: int, out: str, err: str) -> dict[str, Any]:
    """What `docker info --format INFO_FORMAT` said: version, runtimes and, when the
    daemon did not answer, why."""
    if rc == 0:
        try:
            info = json.loads(out)
        except ValueError:
            return {
                "version": "",
                "runtimes": [],
                "error": f"unreadable docker info: {out.strip()[:200]}",
            }
        version = info.get("version") or ""
        if version:
            return {"version": version, "runtimes": sorted(info.get("runtimes") or {}), "error": ""}
        out = ""  # the client's half of the answer says nothing about the daemon
    reason = (
        " ".join((err or out).split())[:500]
        or f"docker info exited with {rc} and no server version"
    )
    return {"version": "", "runtimes": [], "error": reason}


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
    )
    cli = module.get_bin_path(module.params["docker_cli"])
    if cli is None:
        answer = {
            "version": "",
            "runtimes": [],
            "error": f"no {module.params['docker_cli']} command",
        }
    else:
        rc, out, err = module.run_command([cli, "info", "--format", INFO_FORMAT])
        answer = parse_info(rc, out, err)
    module.exit_json(changed=False, sdk=importlib.util.find_spec("docker") is not None, **answer)


if __name__ == "__main__":
    main()
