"""moto's server, with the shape of EC2's answers fixed where amazon.aws depends on it.

Run as ``python -m tests.support.moto_server -H 127.0.0.1 -p PORT`` (moto.server's options).
"""

from __future__ import annotations

import json
import os
from typing import Any


def _volumes_always_name_their_snapshot() -> None:
    # EC2's DescribeVolumes always has SnapshotId ("" for a blank volume); moto leaves it out,
    # and amazon.aws.ec2_vol_info then fails with KeyError 'snapshot_id'.
    from moto.ec2.models import elastic_block_store

    original = elastic_block_store.Volume.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if self.snapshot_id is None:
            self.snapshot_id = ""

    elastic_block_store.Volume.__init__ = init  # type: ignore[method-assign]


def _template_tags_stay_out_of_the_version_data() -> None:
    # EC2 applies CreateLaunchTemplate's TagSpecifications of type launch-template to the
    # template itself; moto also copies them into version 1's LaunchTemplateData. Then
    # amazon.aws.ec2_launch_template, comparing its data with the latest version's, makes a
    # second version on the next run (EC2 would not), and moto cannot delete versions
    # (DeleteLaunchTemplateVersions is not implemented), so teardown fails.
    from moto.ec2.models import launch_templates

    original = launch_templates.LaunchTemplateBackend.create_launch_template

    def create(self: Any, name: str, description: str, data: dict, tag_spec: dict) -> Any:
        specs = [
            spec
            for spec in data.get("TagSpecifications") or []
            if spec.get("ResourceType") != "launch-template"
        ]
        data = {k: v for k, v in data.items() if k != "TagSpecifications"}
        if specs:
            data["TagSpecifications"] = specs
        return original(self, name, description, data, tag_spec)

    launch_templates.LaunchTemplateBackend.create_launch_template = create  # type: ignore[method-assign]


def _faults() -> dict[str, Any]:
    """The faults a test asked for (tests.support.moto.MotoServer.set_faults), read anew on
    every call so a test can set and clear them on the running server."""
    path = os.environ.get("WYVERN_MOTO_FAULTS", "")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


# EC2's answers to a spot launch it cannot fill, by error code.
SPOT_REFUSALS = {
    "InsufficientInstanceCapacity": "There is no Spot capacity available that matches your request.",
    "SpotMaxPriceTooLow": (
        "Your Spot request price of 0.30 is lower than the minimum required Spot request "
        "fulfillment price of 0.5260."
    ),
}


def _spot_capacity_can_run_out() -> None:
    # EC2 refuses a spot launch in a zone without spot capacity (InsufficientInstanceCapacity)
    # or whose spot price is above the maximum (SpotMaxPriceTooLow); moto never does. With
    # the fault `spot_refused_zones` ({zone: error code}), a spot RunInstances (its own market
    # options, or its launch template's) in one of those zones fails as EC2's does.
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models import instances

    original = instances.InstanceBackend.run_instances

    def run(self: Any, image_id: Any, count: Any, user_data: Any, groups: Any, **kwargs: Any):
        refused = _faults().get("spot_refused_zones") or {}
        if refused and _is_spot(self, kwargs):
            code = refused.get(_zone(self, kwargs))
            if code:
                raise EC2ClientError(code, SPOT_REFUSALS[code])
        return original(self, image_id, count, user_data, groups, **kwargs)

    instances.InstanceBackend.run_instances = run  # type: ignore[method-assign]


def _is_spot(backend: Any, kwargs: dict[str, Any]) -> bool:
    if kwargs.get("instance_market_options") == "spot":
        return True
    if kwargs.get("launch_template"):
        data = backend._get_template_from_args(kwargs["launch_template"]).data
        return (data.get("InstanceMarketOptions") or {}).get("MarketType") == "spot"
    return False


def _zone(backend: Any, kwargs: dict[str, Any]) -> str:
    subnet = kwargs.get("subnet_id") or next(
        (nic.get("SubnetId") for nic in kwargs.get("nics") or [] if nic.get("SubnetId")), None
    )
    if subnet:
        return backend.get_subnet(subnet).availability_zone
    return kwargs.get("placement") or ""


def _placement_groups() -> None:
    # moto has no placement groups (CreatePlacementGroup is "not implemented"). EC2's, as
    # far as amazon.aws's ec2_placement_group(_info) and a launch use them: create (a name
    # is unique: InvalidPlacementGroup.Duplicate), describe (all, by GroupNames or the
    # group-name filter, with tags), delete (InvalidPlacementGroup.Unknown; InUse while an
    # instance that is not terminated is in it), and RunInstances into a group (it must
    # exist). Kept on the EC2 backend, so moto's reset clears them.
    import uuid

    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.responses import EC2Response
    from moto.ec2.responses.instances import InstanceResponse

    def groups(response: Any) -> dict[str, dict[str, Any]]:
        backend = response.ec2_backend
        if not hasattr(backend, "wyvern_placement_groups"):
            backend.wyvern_placement_groups = {}
        return backend.wyvern_placement_groups

    def shown(group: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in group.items() if k != "Instances"}

    def create_placement_group(self: Any) -> ActionResult:
        name = self._get_param("GroupName")
        if name in groups(self):
            raise EC2ClientError(
                "InvalidPlacementGroup.Duplicate", f"The Placement Group '{name}' already exists."
            )
        tags = self._parse_tag_specification().get("placement-group", {})
        group = {
            "GroupName": name,
            "GroupId": f"pg-{uuid.uuid4().hex[:17]}",
            "Strategy": self._get_param("Strategy") or "cluster",
            "State": "available",
            "GroupArn": f"arn:aws:ec2:{self.region}:123456789012:placement-group/{name}",
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
            "Instances": set(),
        }
        groups(self)[name] = group
        return ActionResult({"PlacementGroup": shown(group)})

    def describe_placement_groups(self: Any) -> ActionResult:
        names = set(self._get_param("GroupNames", []) or [])
        filters = self._filters_from_querystring() or {}
        names |= set(filters.get("group-name", []))
        found = [shown(g) for n, g in groups(self).items() if not names or n in names]
        return ActionResult({"PlacementGroups": found})

    def delete_placement_group(self: Any) -> ActionResult:
        name = self._get_param("GroupName")
        group = groups(self).get(name)
        if group is None:
            raise EC2ClientError(
                "InvalidPlacementGroup.Unknown", f"The Placement Group '{name}' is unknown."
            )
        live = [
            i for i in group["Instances"] if self.ec2_backend.get_instance(i).state != "terminated"
        ]
        if live:
            raise EC2ClientError(
                "InvalidPlacementGroup.InUse",
                f"The placement group '{name}' is in use and may not be deleted.",
            )
        del groups(self)[name]
        return ActionResult({})

    original_run = InstanceResponse.run_instances

    def run_instances(self: Any) -> Any:
        name = self._get_param("Placement.GroupName")
        if name and name not in groups(self):
            raise EC2ClientError(
                "InvalidPlacementGroup.Unknown", f"The Placement Group '{name}' is unknown."
            )
        before = {i.id for i in self.ec2_backend.all_instances()}
        result = original_run(self)
        if name:
            made = {i.id for i in self.ec2_backend.all_instances()} - before
            groups(self)[name]["Instances"] |= made
        return result

    EC2Response.create_placement_group = create_placement_group  # type: ignore[attr-defined]
    EC2Response.describe_placement_groups = describe_placement_groups  # type: ignore[attr-defined]
    EC2Response.delete_placement_group = delete_placement_group  # type: ignore[attr-defined]
    InstanceResponse.run_instances = run_instances  # type: ignore[method-assign]


if __name__ == "__main__":
    from moto.server import main

    _volumes_always_name_their_snapshot()
    _template_tags_stay_out_of_the_version_data()
    _spot_capacity_can_run_out()
    _placement_groups()
    main()
