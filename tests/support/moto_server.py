"""moto's server, with the shape of EC2's answers fixed where amazon.aws depends on it.

Run as ``python -m tests.support.moto_server -H 127.0.0.1 -p PORT`` (moto.server's options).
"""

from __future__ import annotations

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


if __name__ == "__main__":
    from moto.server import main

    _volumes_always_name_their_snapshot()
    _template_tags_stay_out_of_the_version_data()
    main()
