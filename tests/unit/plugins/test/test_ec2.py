"""The ec2 launch retries only while EC2 does not know a just-made instance profile yet."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible_collections.wyvern.workbench.plugins.test import ec2 as ec2_tests

ROOT = Path(__file__).resolve().parents[4]
NOT_READY = ec2_tests.TestModule().tests()["ec2_profile_not_ready"]
RUN_INSTANCES = "Failed to create new EC2 instance: An error occurred (InvalidParameterValue) when calling the RunInstances operation: "


@pytest.mark.parametrize(
    "message",
    [
        # EC2's words while IAM has not propagated a new profile (by name, by ARN).
        "Value (wb-owner-durable) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name",
        "Value (arn:aws:iam::123456789012:instance-profile/wb) for parameter iamInstanceProfile.arn is invalid. Invalid IAM Instance Profile ARN",
    ],
)
def test_a_launch_refused_for_a_profile_ec2_does_not_know_yet_is_retried(message: str) -> None:
    assert NOT_READY({"failed": True, "msg": RUN_INSTANCES + message})
    # The module may put the botocore text in the exception field only.
    assert NOT_READY(
        {"failed": True, "msg": "Failed to create new EC2 instance", "exception": message}
    )


@pytest.mark.parametrize(
    "result",
    [
        {"changed": True, "instances": [{"instance_id": "i-1"}]},  # launched
        {"failed": False, "msg": "Invalid IAM Instance Profile name"},  # not a failure
        {"failed": True, "msg": RUN_INSTANCES + "Value (x) for parameter instanceType is invalid."},
        {"failed": True, "msg": "InsufficientInstanceCapacity: no capacity in us-east-1a"},
        {"failed": True, "msg": "UnauthorizedOperation: not authorized to perform iam:PassRole"},
        {"failed": True},
        "not a result",
        None,
    ],
)
def test_every_other_outcome_is_final(result) -> None:
    assert not NOT_READY(result)


def test_every_launch_that_can_carry_a_profile_retries_on_it() -> None:
    tasks_dir = ROOT / "roles" / "ec2_gpu_instance" / "tasks"
    launches = []

    def walk(tasks):
        for task in tasks or []:
            for key in ("block", "rescue", "always"):
                walk(task.get(key))
            module = task.get("amazon.aws.ec2_instance")
            if module and module.get("state") == "running":
                launches.append(task)

    for path in sorted(tasks_dir.glob("*.yml")):
        walk(yaml.safe_load(path.read_text()))
    assert len(launches) == 2  # every node on demand (launch.yml), spot
    for task in launches:
        assert "ec2_profile_not_ready" in task.get("until", ""), task["name"]
        assert task["register"] in task["until"] and int(task["retries"]) >= 3, task["name"]
