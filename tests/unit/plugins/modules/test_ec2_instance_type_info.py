"""ec2_instance_type_info's two AWS calls, against botocore's Stubber (the SDK boundary)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

ROOT = Path(__file__).resolve().parents[4]
_spec = importlib.util.spec_from_file_location(
    "ec2_instance_type_info", ROOT / "plugins/modules/ec2_instance_type_info.py"
)
assert _spec and _spec.loader
module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(module)


@pytest.fixture
def ec2():
    client = boto3.client(
        "ec2", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stubber:
        yield client, stubber


def test_unknown_types_are_absent_not_an_error(ec2) -> None:
    client, stubber = ec2
    stubber.add_response(
        "describe_instance_types",
        {"InstanceTypes": [{"InstanceType": "g4dn.xlarge", "GpuInfo": {"Gpus": [{"Name": "T4"}]}}]},
        {"Filters": [{"Name": "instance-type", "Values": ["g4dn.xlarge", "p2.xlarge"]}]},
    )
    found = module.describe_types(client, ["g4dn.xlarge", "p2.xlarge"])
    assert [t["InstanceType"] for t in found] == ["g4dn.xlarge"]


def test_offered_zones_are_grouped_sorted_and_empty_where_not_offered(ec2) -> None:
    client, stubber = ec2
    offerings = [
        {"InstanceType": "g4dn.xlarge", "LocationType": "availability-zone", "Location": zone}
        for zone in ("eu-west-1c", "eu-west-1a")
    ]
    stubber.add_response(
        "describe_instance_type_offerings",
        {"InstanceTypeOfferings": offerings},
        {
            "LocationType": "availability-zone",
            "Filters": [{"Name": "instance-type", "Values": ["g4dn.xlarge", "p5e.48xlarge"]}],
        },
    )
    zones = module.describe_offered_zones(client, ["g4dn.xlarge", "p5e.48xlarge"])
    assert zones == {"g4dn.xlarge": ["eu-west-1a", "eu-west-1c"], "p5e.48xlarge": []}


def test_a_throttled_call_is_retried_with_backoff(ec2, monkeypatch) -> None:
    # A busy account gets RequestLimitExceeded; the module waits and asks again instead of
    # failing the preflight.
    from ansible_collections.amazon.aws.plugins.module_utils import cloud

    slept: list[float] = []
    monkeypatch.setattr(cloud.time, "sleep", slept.append)
    client, stubber = ec2
    params = {
        "LocationType": "availability-zone",
        "Filters": [{"Name": "instance-type", "Values": ["g4dn.xlarge"]}],
    }
    for _ in range(2):
        stubber.add_client_error(
            "describe_instance_type_offerings",
            service_error_code="RequestLimitExceeded",
            http_status_code=503,
            expected_params=params,
        )
    stubber.add_response(
        "describe_instance_type_offerings",
        {
            "InstanceTypeOfferings": [
                {
                    "InstanceType": "g4dn.xlarge",
                    "LocationType": "availability-zone",
                    "Location": "eu-west-1b",
                }
            ]
        },
        params,
    )
    assert module.describe_offered_zones(client, ["g4dn.xlarge"]) == {"g4dn.xlarge": ["eu-west-1b"]}
    assert len(slept) == 2
    stubber.assert_no_pending_responses()


def test_a_lasting_error_is_not_retried(ec2, monkeypatch) -> None:
    from ansible_collections.amazon.aws.plugins.module_utils import cloud

    monkeypatch.setattr(cloud.time, "sleep", lambda _: None)
    client, stubber = ec2
    stubber.add_client_error(
        "describe_instance_types", service_error_code="UnauthorizedOperation", http_status_code=403
    )
    with pytest.raises(Exception, match="UnauthorizedOperation"):
        module.describe_types(client, ["g4dn.xlarge"])
    stubber.assert_no_pending_responses()
