#!/usr/bin/python
# Copyright: Wyvern workbench team
# Apache License 2.0 (see galaxy.yml)
from __future__ import annotations

DOCUMENTATION = r"""
module: ec2_instance_type_info
short_description: Describe EC2 instance types and where the region offers them
version_added: 0.1.0
description:
  - Answers, before anything is launched, whether each requested instance type exists
    (C(DescribeInstanceTypes)) and in which availability zones of the connection's region
    it is offered (C(DescribeInstanceTypeOfferings)).
  - The amazon.aws collection has no module for these two calls.
author:
  - Wyvern workbench team (@wyvern-workbench)
options:
  instance_types:
    description: Instance type names, for example V(g4dn.xlarge).
    type: list
    elements: str
    required: true
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
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Check that g4dn.xlarge is offered in eu-west-1
  wyvern.workbench.ec2_instance_type_info:
    region: eu-west-1
    instance_types: [g4dn.xlarge]
  register: types

- name: Fail when it is not
  ansible.builtin.assert:
    that: types.offered_zones['g4dn.xlarge'] | length > 0
"""

RETURN = r"""
instance_types:
  description: The types that exist, as C(DescribeInstanceTypes) describes them, in snake case.
  returned: always
  type: list
  elements: dict
  sample: [{instance_type: g4dn.xlarge, gpu_info: {gpus: [{name: T4, count: 1}]}}]
missing:
  description: Requested types that do not exist.
  returned: always
  type: list
  elements: str
  sample: [p2.xlarge]
offered_zones:
  description: For each requested type, the sorted availability zones of the region that offer it
    (empty where the region does not).
  returned: always
  type: dict
  sample: {g4dn.xlarge: [us-east-1a, us-east-1b]}
region:
  description: The region that was asked.
  returned: always
  type: str
  sample: us-east-1
"""

import contextlib

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing SDK
    import botocore

from ansible.module_utils.common.dict_transformations import camel_dict_to_snake_dict
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry


# As amazon.aws's own describe helpers do: a paginator takes no aws_retry, so the whole
# walk over the pages is retried, with jittered backoff, on throttling and other
# transient errors (RequestLimitExceeded, Throttling, 5xx...).
@AWSRetry.jittered_backoff()
def _all_pages(client, operation: str, **params) -> dict:
    return client.get_paginator(operation).paginate(**params).build_full_result()


def describe_types(client, names: list[str]) -> list[dict]:
    # A filter (not InstanceTypes=) so that an unknown name is simply absent, not an error.
    pages = _all_pages(
        client, "describe_instance_types", Filters=[{"Name": "instance-type", "Values": names}]
    )
    return pages.get("InstanceTypes", [])


def describe_offered_zones(client, names: list[str]) -> dict[str, list[str]]:
    pages = _all_pages(
        client,
        "describe_instance_type_offerings",
        LocationType="availability-zone",
        Filters=[{"Name": "instance-type", "Values": names}],
    )
    zones: dict[str, set[str]] = {name: set() for name in names}
    for offering in pages.get("InstanceTypeOfferings", []):
        zones.setdefault(offering["InstanceType"], set()).add(offering["Location"])
    return {name: sorted(found) for name, found in zones.items()}


def main() -> None:
    argument_spec = dict(
        instance_types=dict(type="list", elements="str", required=True),
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    names = list(dict.fromkeys(module.params["instance_types"]))
    client = module.client("ec2")
    try:
        described = describe_types(client, names)
        offered = describe_offered_zones(client, names)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
        module.fail_json_aws(e, msg="Failed to describe instance types")
    found = {item["InstanceType"] for item in described}
    module.exit_json(
        changed=False,
        instance_types=[camel_dict_to_snake_dict(item) for item in described],
        missing=[name for name in names if name not in found],
        offered_zones=offered,
        region=module.region,
    )


if __name__ == "__main__":
    main()
