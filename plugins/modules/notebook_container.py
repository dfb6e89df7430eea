#!/usr/bin/python
# Copyright: Wyvern workbench team
# Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: notebook_container
short_description: Run the workbench's Jupyter container and prove that PyTorch sees the right device
version_added: 0.1.0
description:
  - Creates, starts, stops or removes one Jupyter notebook container through the Docker SDK for Python.
  - Idempotent. The same options change nothing; any drift in the image id, environment, published port,
    GPUs, mounts, labels, shared memory size, user, restart policy, init, network or network aliases recreates the container,
    and the diff says what changed. A changed token is drift too (a SHA-256 of it is a label). An exited
    container is started again.
  - The container runs with Docker's init as PID 1 (it reaps orphaned processes and forwards SIGTERM), alone
    on its own bridge network C(NAME-net) with inter-container traffic off, so other containers cannot reach
    Jupyter; the network is removed with the container (O(state=absent)).
  - A container that crashes at start is reported within seconds with its exit code and logs; one that
    Docker's restart policy keeps restarting (a crash loop) is stopped and kept for inspection.
  - With O(state=started) it waits until Jupyter's REST API answers with the token, then runs a probe
    inside the container (torch and torchvision versions, CUDA version, whether CUDA is available, the
    devices) and compares it with O(expect_gpu). A mismatch fails with a diagnosis that compares the host
    driver with the minimum driver that the image's CUDA needs and says whether Docker has the nvidia
    runtime.
  - The token never enters the container's environment (where C(docker inspect), every kernel and
    C(/proc/PID/environ) would show it) nor the module's result or diff. The container mounts a read-only copy,
    C(TOKEN_FILE.d/jupyter_token) (0444 in a 0700 directory), at C(/run/secrets/jupyter_token) and gets
    C(JUPYTER_TOKEN_FILE) naming it, plus C(WORKBENCH_IMAGE_ID) (the image id), in addition to O(env).
  - The last lines of the container's log are returned on failure with the token masked.
  - On any failure after the container exists, the result carries the last 50 lines of its log as RV(logs).
author:
  - Wyvern workbench team (@wyvern-workbench)
requirements:
  - Docker SDK for Python >= 7.0 (C(docker)) on the managed host
attributes:
  check_mode:
    support: partial
    description: Can run in check mode and predict whether a run would change anything, without changing it.
    details:
      - Predicts the actions (RV(actions)), the drift (RV(drift)), C(changed) and the diff from the daemon's
        current state and the host's token and port files, which it reads and never writes; nothing is created,
        started, stopped or removed.
      - It does not predict what only starting the container shows, so it returns no RV(seconds_to_healthy),
        RV(started_at) or RV(probe); a run that it predicts as unchanged can still fail the health check, the
        probe or the GPU comparison, or find the port taken.
      - A missing token file is reported as a change (a new token, hence a recreate) but not created, so two
        check runs in a row predict the same change. O(state=started) still needs O(image) on the host.
  diff_mode:
    support: partial
    description: Shows what a run changes in the container, before and after.
    details:
      - The diff shows the container's state and its managed settings (image id, environment, published port,
        GPUs, mounts, labels, shared memory, user, restart policy, init, network) before and after, with any
        token in the environment masked.
      - Changes to the host files (the token file, its read-only copy, the port file) count in C(changed) but
        are not in the diff; a changed token shows as a changed digest label only.
  idempotent:
    support: full
    description: A second run with the same options reports C(changed=false).
options:
  name:
    description: Name of the container.
    type: str
    required: true
  image:
    description:
      - Image to run, by tag or id. Must already be on the host. Required with O(state=started).
    type: str
  state:
    description:
      - V(started) makes the container exist with this spec, run, and pass the health check.
      - V(stopped) stops it if it runs (it stays for inspection); V(absent) removes it.
    type: str
    choices: [started, stopped, absent]
    default: started
  gpus:
    description:
      - GPUs to hand to the container as a Docker device request. V(auto) means V(all) on a host with an
        NVIDIA GPU (a PCI device of vendor 0x10de) and V(none) elsewhere. A number asks for that many.
    type: str
    default: auto
  bind_address:
    description:
      - Host address to publish Jupyter on. Keep the loopback default and reach it through SSH.
      - Any other address fails unless O(allow_public_bind=true).
    type: str
    default: 127.0.0.1
  allow_public_bind:
    description:
      - Allow a non-loopback O(bind_address) such as V(0.0.0.0). Jupyter is then guarded by its token alone
        and its Host-header check against DNS rebinding is turned off (browsers elsewhere send the host's
        address); the module warns.
    type: bool
    default: false
  port:
    description:
      - Host port to publish Jupyter's port 8888 on.
      - When omitted, the port recorded in O(port_file), else the port the container already publishes, else
        the first port from 8888 up that no other container publishes and nothing listens on. The port used is
        recorded in O(port_file), so reruns keep it.
    type: int
  port_file:
    description: Host file that records the port, so a workbench keeps its port across runs.
    type: path
  token:
    description:
      - Jupyter's token. When omitted, the token in O(token_file) is used, or a random one (32 bytes,
        URL-safe) is created there once, so reruns keep it. A given token is also written to O(token_file).
    type: str
  token_file:
    description: Host file (mode 0600) holding the token. Defaults to C(~/.local/share/wyvern/NAME.token).
    type: path
  volumes:
    description: Bind mounts as C(HOST_PATH:CONTAINER_PATH[:ro|rw]), for example the workload and outputs.
    type: list
    elements: str
    default: []
  shm_size:
    description: Size of C(/dev/shm); PyTorch's DataLoader workers pass batches through it.
    type: str
    default: 2g
  env:
    description: Extra environment variables.
    type: dict
    default: {}
  user:
    description: User (and group) to run as; must not be root.
    type: str
    default: "1000:1000"
  restart_policy:
    description: Docker restart policy.
    type: str
    choices: ["no", on-failure, always, unless-stopped]
    default: unless-stopped
  labels:
    description: Container labels.
    type: dict
    default: {}
  network:
    description:
      - The bridge network to join instead of the container's own C(NAME-net); the nodes of one workbench
        share one (C(WORKBENCH-nodes)). Created when missing (with O(network_icc)), removed with the last
        container on it. A container that moves to it leaves its own C(NAME-net), which is removed.
      - V(host) puts the container on the host's network stack instead (a node of a workbench spanning
        machines, where torchrun's rendezvous and NCCL or gloo reach it at the host's address). Nothing
        is published then; Jupyter itself listens on O(bind_address):O(port), the host's loopback unless
        O(allow_public_bind), so the notebook is no more exposed than a published one. O(network_aliases)
        do not apply there; name peers with O(extra_hosts).
    type: str
  network_icc:
    description:
      - Whether containers on O(network) may reach each other (inter-container traffic). Off for a notebook
        alone on its network; on for the network a workbench's nodes share, where only its nodes are
        (containers on every other network stay out). A network that exists with the other setting fails
        the task with the fix.
    type: bool
    default: false
  network_aliases:
    description: Names other containers on O(network) reach this one by (a node's C(node-000) alias).
    type: list
    elements: str
    default: []
  extra_hosts:
    description:
      - Names added to the container's C(/etc/hosts), name to IP address (a workbench's nodes on other
        machines, C(node-001) to its private address). A bad name or address fails before anything changes.
    type: dict
    default: {}
  timeout:
    description:
      - Seconds to wait for Jupyter to answer before failing. A container that is still running then is left
        running (the message says so); one that exited or crash-loops fails at once.
    type: int
    default: 180
  interval:
    description: Seconds between two polls of Jupyter's API.
    type: float
    default: 0.2
  docker_host:
    description: The Docker daemon to talk to, as in C(DOCKER_HOST); defaults to C(DOCKER_HOST), else the local socket.
    type: str
  expect_gpu:
    description:
      - Whether PyTorch must see CUDA. V(auto) expects it exactly where the host has an NVIDIA GPU, so a GPU
        host never falls back to the CPU silently.
    type: str
    choices: [auto, "true", "false"]
    default: auto
"""

EXAMPLES = r"""
- name: Start the notebook on the host's loopback
  wyvern.workbench.notebook_container:
    name: workbench
    image: wyvern/notebook:3f2a9c0d1e2b4a5c
    volumes:
      - /var/lib/wyvern/workbench/workload:/workspace/workload:ro
      - /var/lib/wyvern/workbench/outputs:/workspace/outputs:rw
    token_file: /var/lib/wyvern/workbench/token
  register: notebook

- name: Insist on the GPU on an EC2 GPU instance
  wyvern.workbench.notebook_container:
    name: workbench
    image: wyvern/notebook:3f2a9c0d1e2b4a5c
    gpus: all
    expect_gpu: "true"
    token_file: /var/lib/wyvern/workbench/token

- name: Remove the notebook container
  wyvern.workbench.notebook_container:
    name: workbench
    state: absent
"""

RETURN = r"""
url:
  description: Where Jupyter answers on the host, without the token.
  returned: state is started
  type: str
  sample: http://127.0.0.1:8888
container_id:
  description: Id of the container.
  returned: when the container exists
  type: str
  sample: 4f1c2d3e...
image_id:
  description: Id of the image the container runs.
  returned: state is started
  type: str
  sample: sha256:9b1f...
seconds_to_healthy:
  description: Seconds from starting the container (or from the check, when it already ran) to the first
    answer of Jupyter's API with the token.
  returned: state is started, not in check mode
  type: float
  sample: 3.04
started_at:
  description: Epoch time of the start call when this run started the container, else null.
  returned: state is started, not in check mode
  type: float
probe:
  description: What PyTorch reports inside the container.
  returned: state is started, not in check mode
  type: dict
  contains:
    torch:
      description: torch version.
      type: str
      sample: 2.14.1+cu130
    torchvision:
      description: torchvision version.
      type: str
      sample: 0.29.1+cu130
    cuda:
      description: CUDA version torch was built with.
      type: str
      sample: "13.0"
    cuda_available:
      description: torch.cuda.is_available().
      type: bool
    device_count:
      description: Number of CUDA devices.
      type: int
    devices:
      description: CUDA device names.
      type: list
      elements: str
probe_recorded:
  description:
    - V(true) when O(state=started) found the container healthy and unchanged since its last good
      probe (same container, same start, image id, GPUs, host driver and GPU expectation) and
      reused that probe's answer, kept in C(<token_file>.probe.json), instead of importing
      PyTorch again. Every start, re-creation, restart or driver change probes anew.
  returned: always
  type: bool
token_file:
  description: Host file that holds the token.
  returned: state is started
  type: str
gpus:
  description: GPUs requested after resolving V(auto) (V(all), V(none) or a count).
  returned: state is started
  type: str
actions:
  description: What the run did (or would do in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: [remove, create, start]
drift:
  description: Settings that differed from the wanted spec and caused a recreate.
  returned: always
  type: list
  elements: str
  sample: [image, env]
logs:
  description: The last 50 lines of the container's log.
  returned: on failure, when the container exists
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_container.common import (
    NotebookError,
)
from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_container.engine import (
    DOCKER_IMPORT_ERROR,
    HAS_DOCKER,
)
from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_container.manager import (
    NotebookContainer,
)
from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_container.spec import (
    check_bind_address,
)

ROOT_USERS = ("0", "root")

# The options, declared once here; DOCUMENTATION describes the same ones, and
# tests/unit/plugins/modules/test_notebook_container.py (and ansible-test's validate-modules)
# fail when their names, types, defaults, choices or required flags disagree.
ARGUMENT_SPEC: dict[str, dict] = dict(
    name=dict(type="str", required=True),
    image=dict(type="str"),
    state=dict(type="str", default="started", choices=["started", "stopped", "absent"]),
    gpus=dict(type="str", default="auto"),
    bind_address=dict(type="str", default="127.0.0.1"),
    allow_public_bind=dict(type="bool", default=False),
    port=dict(type="int"),
    port_file=dict(type="path"),
    token=dict(type="str", no_log=True),
    token_file=dict(type="path"),
    volumes=dict(type="list", elements="str", default=[]),
    shm_size=dict(type="str", default="2g"),
    env=dict(type="dict", default={}),
    user=dict(type="str", default="1000:1000"),
    restart_policy=dict(
        type="str",
        default="unless-stopped",
        choices=["no", "on-failure", "always", "unless-stopped"],
    ),
    labels=dict(type="dict", default={}),
    network=dict(type="str"),
    network_icc=dict(type="bool", default=False),
    network_aliases=dict(type="list", elements="str", default=[]),
    extra_hosts=dict(type="dict", default={}),
    timeout=dict(type="int", default=180),
    interval=dict(type="float", default=0.2),
    expect_gpu=dict(type="str", default="auto", choices=["auto", "true", "false"]),
    docker_host=dict(type="str"),
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_if=[("state", "started", ("image",))],
        supports_check_mode=True,
    )
    if not HAS_DOCKER:
        module.fail_json(msg=missing_required_lib("docker"), exception=str(DOCKER_IMPORT_ERROR))

    params = dict(module.params)
    if params["user"].split(":")[0] in ROOT_USERS:
        module.fail_json(
            msg=f"user {params['user']!r} is root; run the notebook as a non-root user such as 1000:1000"
        )
    if params["port"] is not None and not 1 <= params["port"] <= 65535:
        module.fail_json(msg=f"port {params['port']} is not a TCP port; use 1-65535")
    if params["timeout"] <= 0 or params["interval"] <= 0:
        module.fail_json(msg="timeout and interval must be positive; fix them")
    if not params["token_file"]:
        params["token_file"] = os.path.expanduser(f"~/.local/share/wyvern/{params['name']}.token")

    try:
        if params["state"] == "started":
            warning = check_bind_address(params["bind_address"], params["allow_public_bind"])
            if warning:
                module.warn(warning)
        result = NotebookContainer(params, module.check_mode).run()
    except NotebookError as exc:
        failed = dict(exc.extra)
        if exc.logs is not None:
            failed["logs"] = exc.logs
        module.fail_json(msg=str(exc), **failed)
    module.exit_json(**result.as_dict())


if __name__ == "__main__":
    main()
