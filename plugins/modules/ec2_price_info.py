#!/usr/bin/python
# Copyright: Wyvern workbench team
# Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ec2_price_info
short_description: What an EC2 instance type costs per hour, on demand and spot
version_added: 0.2.0
description:
  - The on-demand price (Linux, shared tenancy) of an instance type in the connection's region, from the
    AWS Price List API (C(pricing:GetProducts), asked in us-east-1), and the lowest current spot price of
    the region's zones (C(DescribeSpotPriceHistory)).
  - API answers are cached on the control node for O(cache_ttl) seconds (a day by default).
  - Where the Price List API does not answer (no permission, no network, an endpoint that does not serve
    it), the on-demand price comes from O(fallback_prices) and the result says so in RV(fallback_reason).
author:
  - Wyvern workbench team (@wyvern-workbench)
attributes:
  check_mode:
    support: full
    description: Only reads; runs the same in check mode.
  diff_mode:
    support: none
    description: Returns no diff.
  idempotent:
    support: full
    description: Changes nothing on any host (the cache is the control node's own).
options:
  instance_type:
    description: The instance type, for example V(g4dn.xlarge).
    type: str
    required: true
  cache_dir:
    description: Where answers are cached; an empty string turns the cache off.
    type: path
    default: ~/.cache/wyvern/prices
  cache_ttl:
    description: Seconds an answer is reused.
    type: int
    default: 86400
  fallback_prices:
    description: Hourly on-demand USD prices by instance type, used when the API does not answer.
    type: dict
    default: {}
  fallback_source:
    description: Where O(fallback_prices) comes from, shown with a fallback price.
    type: str
    default: price table
  fallback_date:
    description: When O(fallback_prices) was taken, shown with a fallback price.
    type: str
    default: ""
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Price the instance type
  wyvern.workbench.ec2_price_info:
    region: us-east-1
    instance_type: g4dn.xlarge
    fallback_prices: "{{ ec2_gpu_instance_prices }}"
    fallback_source: "{{ ec2_gpu_instance_prices_source }}"
    fallback_date: "{{ ec2_gpu_instance_prices_date }}"
  register: price

- name: Show it
  ansible.builtin.debug:
    msg: >-
      {{ price.on_demand.usd_per_hour }} USD/hour on demand ({{ price.on_demand.source }},
      {{ price.on_demand.date }}){{ '; spot ' ~ price.spot.usd_per_hour ~ ' in ' ~ price.spot.zone
      if price.spot else '' }}
"""

RETURN = r"""
on_demand:
  description: The hourly on-demand price, or null when neither the API nor the table knows it.
  returned: always
  type: dict
  sample: {usd_per_hour: 0.526, source: AWS Price List API, date: "2026-11-01"}
spot:
  description: The lowest current spot price over the region's zones, or null when there is none.
  returned: always
  type: dict
  sample: {usd_per_hour: 0.2131, zone: us-east-1b, source: EC2 spot price history, date: "2026-11-27"}
cached:
  description: Whether the answer came from the cache.
  returned: always
  type: bool
fallback_reason:
  description: Why the on-demand price comes from O(fallback_prices), or null.
  returned: always
  type: str
  sample: the Price List API did not answer (AccessDeniedException)
region:
  description: The region that was priced.
  returned: always
  type: str
"""

import contextlib

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing SDK
    import botocore

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.wyvern.workbench.plugins.module_utils._ec2_prices import (
    PRICING_REGION,
    prices,
)


def main() -> None:
    argument_spec = dict(
        instance_type=dict(type="str", required=True),
        cache_dir=dict(type="path", default="~/.cache/wyvern/prices"),
        cache_ttl=dict(type="int", default=86400),
        fallback_prices=dict(type="dict", default={}),
        fallback_source=dict(type="str", default="price table"),
        fallback_date=dict(type="str", default=""),
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    if params["cache_ttl"] < 0:
        module.fail_json(msg=f"cache_ttl must be 0 or more seconds (got {params['cache_ttl']})")
    region = module.region
    result = prices(
        lambda: module.client("pricing", region=PRICING_REGION),
        lambda: module.client("ec2"),
        region,
        params["instance_type"],
        cache_dir=params["cache_dir"] or None,
        ttl=params["cache_ttl"],
        table=params["fallback_prices"],
        table_source=params["fallback_source"],
        table_date=params["fallback_date"],
        api_errors=(botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError),
    )
    module.exit_json(changed=False, region=region, **result)


if __name__ == "__main__":
    main()
