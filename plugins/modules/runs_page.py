#!/usr/bin/python
# Copyright: Wyvern workbench team
# Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: runs_page
short_description: Write the runs page (index.html) over every run fetched to the control node
version_added: 0.2.0
description:
  - Reads every run under O(outputs_dir)C(/<host>/<workbench>/<run_id>/) (the layout C(playbooks/run.yml)
    fetches into) and writes one HTML page that shows them side by side, newest first, with relative
    links. It shows host, workbench, device, parameters, best validation accuracy, images/s, wall time,
    cost where known, the loss/accuracy curves, the confusion matrix and a link to the executed notebook.
  - Returns the same runs as a text table for the terminal (RV(table)).
  - Everything shown is HTML-escaped and every link URL-quoted, since run ids, data paths and workbench
    names come from users.
  - Run it on the control node (delegated to C(localhost)) after each fetch; the page changes only when
    a run was added or changed.
author:
  - Wyvern workbench team (@wyvern-workbench)
attributes:
  check_mode:
    support: full
    description: Reports whether the page (or the cost record) would change, and writes nothing.
  diff_mode:
    support: none
    description: Returns no diff.
  idempotent:
    support: full
    description: The same runs give the same page, byte for byte; a second run reports no change.
options:
  outputs_dir:
    description: The control node's outputs directory (C(workbench_outputs_dir)).
    type: path
    required: true
  dest:
    description: Where the page goes; default C(index.html) in O(outputs_dir). Links are relative to O(outputs_dir).
    type: path
  title:
    description: The page's title.
    type: str
    default: Wyvern workbench runs
  cost:
    description:
      - Record the hourly price of the host a run ran on (C(cost.json) in the run's directory), so the
        page shows the run's cost (wall time at that price). Local runs have none.
    type: dict
    suboptions:
      run_dir:
        description: The run's directory under O(outputs_dir).
        type: path
        required: true
      usd_per_hour:
        description: The host's price in USD per hour.
        type: float
        required: true
      instance_type:
        description: The instance type the price is for, shown beside the cost.
        type: str
"""

EXAMPLES = r"""
- name: Write the runs page after fetching a run
  wyvern.workbench.runs_page:
    outputs_dir: "{{ workbench_outputs_dir }}"
  delegate_to: localhost
  become: false
  run_once: true

- name: Record what an EC2 run cost, then write the page
  wyvern.workbench.runs_page:
    outputs_dir: "{{ workbench_outputs_dir }}"
    cost:
      run_dir: "{{ workbench_outputs_dir }}/{{ inventory_hostname }}/{{ workbench_name }}/{{ run_id }}"
      usd_per_hour: 0.526
      instance_type: g4dn.xlarge
  delegate_to: localhost
  become: false
"""

RETURN = r"""
dest:
  description: The page's path.
  returned: always
  type: str
  sample: /home/me/wyvern/outputs/index.html
runs:
  description: Every run found, newest first.
  returned: always
  type: list
  elements: dict
  sample:
    - host: localhost
      workbench: workbench
      run_id: finetune-8411ea6834
      path: localhost/workbench/finetune-8411ea6834
      finished: "2026-11-27T05:15:02Z"
      device: cpu
      parameters: {epochs: 3, image_size: 64, mode: finetune}
      best_val_acc: 0.905
      best_epoch: 3
      epochs: 3
      images_per_s: 13.2
      wall_time_s: 212.0
      cost_usd: null
      files: {curves.png: localhost/workbench/finetune-8411ea6834/curves.png}
      problems: []
      interruptions: ["spot interruption notice at 2026-11-27T10:02:03Z, SIGTERM, checkpoint saved"]
table:
  description: The runs as aligned text lines, a header first.
  returned: always
  type: list
  elements: str
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.wyvern.workbench.plugins.module_utils._runs_page import (
    collect_runs,
    cost_record,
    render_html,
    render_table,
    write_if_changed,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            outputs_dir=dict(type="path", required=True),
            dest=dict(type="path"),
            title=dict(type="str", default="Wyvern workbench runs"),
            cost=dict(
                type="dict",
                options=dict(
                    run_dir=dict(type="path", required=True),
                    usd_per_hour=dict(type="float", required=True),
                    instance_type=dict(type="str"),
                ),
            ),
        ),
        supports_check_mode=True,
    )
    params = module.params
    outputs = Path(params["outputs_dir"]).resolve()
    dest = Path(params["dest"]) if params["dest"] else outputs / "index.html"
    changed = False

    cost = params["cost"]
    if cost:
        run_dir = Path(cost["run_dir"]).resolve()
        if outputs not in run_dir.parents:
            module.fail_json(
                msg=f"cost.run_dir ({run_dir}) is not under outputs_dir ({outputs}); pass the run's "
                "directory as run.yml fetched it: <outputs_dir>/<host>/<workbench>/<run_id>"
            )
        if cost["usd_per_hour"] < 0:
            module.fail_json(
                msg=f"cost.usd_per_hour must not be negative (got {cost['usd_per_hour']})"
            )
        changed |= write_if_changed(
            run_dir / "cost.json",
            cost_record(cost["instance_type"], cost["usd_per_hour"]),
            module.check_mode,
        )

    runs = collect_runs(outputs)
    changed |= write_if_changed(dest, render_html(runs, params["title"]), module.check_mode)
    module.exit_json(
        changed=changed,
        dest=str(dest),
        runs=[run.summary() for run in runs],
        table=render_table(runs),
    )


if __name__ == "__main__":
    main()
