#!/usr/bin/python
# Copyright: Wyvern workbench team
# Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gpu_info
short_description: Find the host's NVIDIA GPUs and the loaded driver, without any package
version_added: 0.2.0
description:
  - Counts the PCI devices whose vendor is NVIDIA (0x10de) under C(/sys/bus/pci/devices) and reads the
    loaded kernel driver's version from C(/sys/module/nvidia/version) or C(/proc/driver/nvidia/version).
  - The project's one GPU rule. The nvidia_driver, nvidia_container_toolkit and notebook roles and the
    notebook_container module's health check all use the same implementation, so they cannot disagree.
  - Needs no driver, no nvidia-smi and no extra Python package.
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
  simulate:
    description:
      - Report at least one GPU even where there is none, for tests and check-mode plans on CPU machines.
        The result says RV(gpu.simulated).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Find NVIDIA GPUs
  wyvern.workbench.gpu_info:
  register: gpu

- name: Install the driver only where a GPU is
  ansible.builtin.debug:
    msg: "{{ gpu.gpu.count }} NVIDIA GPU(s), driver {{ gpu.gpu.driver_version or 'not loaded' }}"
  when: gpu.gpu.present
"""

RETURN = r"""
ansible_facts:
  description: The same answer as RV(gpu), as the host fact C(wyvern_gpu), for later roles of the run.
  returned: always
  type: dict
  contains:
    wyvern_gpu:
      description: Equal to RV(gpu).
      type: dict
gpu:
  description: What the host has.
  returned: always
  type: dict
  contains:
    present:
      description: Whether any PCI device has vendor 0x10de (or O(simulate) is true).
      type: bool
      sample: true
    count:
      description: How many such devices (at least 1 when simulated).
      type: int
      sample: 1
    driver_version:
      description: The loaded NVIDIA kernel driver's version, or null when none is loaded.
      type: str
      sample: "580.95.05"
    simulated:
      description: Whether O(simulate) was set.
      type: bool
      sample: false
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.wyvern.workbench.plugins.module_utils._gpu import gpu_facts


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(simulate=dict(type="bool", default=False)),
        supports_check_mode=True,
    )
    gpu = gpu_facts(simulate=module.params["simulate"])
    # Also a host fact, so that a later role of the same run reuses it instead of asking again.
    module.exit_json(changed=False, gpu=gpu, ansible_facts={"wyvern_gpu": gpu})


if __name__ == "__main__":
    main()
