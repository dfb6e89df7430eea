"""market=spot on moto: a launch template with the spot options, IMDSv2, encryption, tags and
the instance profile, one instance launched from it; teardown deletes the template too."""

from __future__ import annotations

import pytest

from .conftest import OWNER, role_env, run_role

NAME = f"wyvern-workbench-{OWNER}"
COMMON = {
    "ec2_gpu_instance_wait_for_ssh": False,
    "ec2_gpu_instance_ssh_cidr": "203.0.113.7/32",
    "ec2_gpu_instance_market": "spot",
    "ec2_gpu_instance_spot_max_price": "0.30",
    "ec2_gpu_instance_shutdown_behavior": "terminate",
}


@pytest.fixture(scope="module")
def spot(moto_session, base_env, tmp_path_factory):
    moto_session.reset()
    home = tmp_path_factory.mktemp("home")
    env = role_env(base_env, moto_session.env, home)
    first = run_role(env, workbench_outputs_dir=str(home / "outputs"), **COMMON)
    assert first.rc == 0, first.describe()
    return env, home, moto_session, first


def test_a_spot_workbench_must_terminate_on_poweroff(moto_session, base_env, tmp_path) -> None:
    env = role_env(base_env, moto_session.env, tmp_path)
    run = run_role(env, **{**COMMON, "ec2_gpu_instance_shutdown_behavior": "stop"})
    assert run.rc != 0
    assert any("workbench_idle_action=terminate" in m for m in run.failures()), run.describe()


def test_the_template_holds_spot_imdsv2_encryption_and_tags(spot) -> None:
    _, _, moto, first = spot
    ec2, iam = moto.client("ec2"), moto.client("iam")
    (template,) = ec2.describe_launch_templates(LaunchTemplateNames=[NAME])["LaunchTemplates"]
    assert {t["Key"]: t["Value"] for t in template["Tags"]}["workbench:name"] == "workbench"
    (version,) = ec2.describe_launch_template_versions(
        LaunchTemplateId=template["LaunchTemplateId"]
    )["LaunchTemplateVersions"]
    data = version["LaunchTemplateData"]
    assert data["InstanceMarketOptions"] == {
        "MarketType": "spot",
        "SpotOptions": {
            "MaxPrice": "0.30",
            "SpotInstanceType": "one-time",
            "InstanceInterruptionBehavior": "terminate",
        },
    }
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    (root,) = data["BlockDeviceMappings"]
    assert root["Ebs"]["Encrypted"] is True and root["Ebs"]["VolumeType"] == "gp3"
    assert data["InstanceInitiatedShutdownBehavior"] == "terminate"
    profile = iam.get_instance_profile(InstanceProfileName=NAME)["InstanceProfile"]
    assert (
        profile["Arn"] == data["IamInstanceProfile"]["Arn"]
        or data["IamInstanceProfile"].get("Name") == NAME
    )
    # The private host key is never in the template (anyone who may describe it reads it).
    assert "UserData" not in data
    shown = first.results("Show the market and what spot saves")[0]["msg"]
    assert shown.startswith(
        "Market: spot (one-time, terminated on interruption, at most 0.30 USD/hour)"
    )


def test_one_instance_is_launched_from_the_template(spot) -> None:
    _, _, moto, _ = spot
    ec2 = moto.client("ec2")
    reservations = ec2.describe_instances(
        Filters=[
            {"Name": "tag:workbench:name", "Values": ["workbench"]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ]
    )["Reservations"]
    (instance,) = [i for r in reservations for i in r["Instances"]]
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    (template,) = ec2.describe_launch_templates(LaunchTemplateNames=[NAME])["LaunchTemplates"]
    assert tags["aws:ec2launchtemplate:id"] == template["LaunchTemplateId"]
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert instance["IamInstanceProfile"]["Arn"].endswith(f"/{NAME}")


def test_a_second_run_changes_nothing_and_keeps_one_template_version(spot) -> None:
    env, home, moto, _ = spot
    again = run_role(env, workbench_outputs_dir=str(home / "outputs"), **COMMON)
    assert again.rc == 0, again.describe()
    assert again.changed == 0, again.describe()
    versions = moto.client("ec2").describe_launch_template_versions(LaunchTemplateName=NAME)
    assert len(versions["LaunchTemplateVersions"]) == 1


def test_teardown_deletes_the_template(spot) -> None:
    env, home, moto, _ = spot
    gone = run_role(
        env, workbench_outputs_dir=str(home / "outputs"), ec2_gpu_instance_state="absent", **COMMON
    )
    assert gone.rc == 0, gone.describe()
    ec2 = moto.client("ec2")
    assert ec2.describe_launch_templates()["LaunchTemplates"] == []


def test_stopping_a_spot_workbench_says_what_to_do_and_stops_nothing(
    moto_session, base_env, tmp_path
) -> None:
    """EC2 refuses to stop a one-time spot instance. moto marks an instance spot only when
    run_instances asks for the spot market itself, so the instance is made that way here,
    with the workbench's tags, as the template launch makes it on EC2."""
    moto_session.reset()
    env = role_env(base_env, moto_session.env, tmp_path)
    ec2 = moto_session.client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    (instance,) = ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        InstanceMarketOptions={"MarketType": "spot"},
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [
                    {"Key": "workbench:name", "Value": "workbench"},
                    {"Key": "workbench:owner", "Value": OWNER},
                ],
            }
        ],
    )["Instances"]
    assert instance.get("InstanceLifecycle") == "spot"
    run = run_role(env, ec2_gpu_instance_state="stopped", **COMMON)
    assert run.rc != 0, run.describe()
    assert any(
        "runs on a one-time spot instance" in m and "playbooks/teardown.yml" in m
        for m in run.failures()
    ), run.describe()
    (now,) = [
        i
        for r in ec2.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"]
        for i in r["Instances"]
    ]
    assert now["State"]["Name"] == "running"


def _spot_instances(ec2, name: str) -> list[dict]:
    reservations = ec2.describe_instances(
        Filters=[
            {"Name": "tag:workbench:name", "Values": [name]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ]
    )["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


def test_no_spot_in_the_first_zone_launches_in_the_next(moto_session, base_env, tmp_path) -> None:
    """EC2 (the test server) cannot fill the spot request in us-east-1a (its spot price there
    is above the maximum): the launch goes on in the next zone that offers the type, and a
    rerun finds that instance, changing nothing. (InsufficientInstanceCapacity takes the
    same path, after amazon.aws's own retries of that code, minutes per zone.)"""
    moto_session.reset()
    env = role_env(base_env, moto_session.env, tmp_path)
    ec2 = moto_session.client("ec2")
    variables = {**COMMON, "workbench_name": "zones", "workbench_outputs_dir": str(tmp_path / "o")}
    moto_session.set_faults(spot_refused_zones={"us-east-1a": "SpotMaxPriceTooLow"})
    try:
        first = run_role(env, **variables)
        assert first.rc == 0, first.describe()
        (instance,) = _spot_instances(ec2, "zones")
        assert instance["Placement"]["AvailabilityZone"] == "us-east-1b"
        # From the spot template (moto marks only a direct spot request InstanceLifecycle=spot).
        assert "aws:ec2launchtemplate:id" in {t["Key"] for t in instance["Tags"]}
        again = run_role(env, **variables)
        assert again.rc == 0, again.describe()
        assert again.changed == 0, again.describe()
        assert [i["InstanceId"] for i in _spot_instances(ec2, "zones")] == [instance["InstanceId"]]
    finally:
        moto_session.set_faults()
        gone = run_role(env, **{**variables, "ec2_gpu_instance_state": "absent"})
    assert gone.rc == 0, gone.describe()


def test_no_spot_anywhere_fails_naming_the_zones_or_falls_back_on_demand(
    moto_session, base_env, tmp_path
) -> None:
    moto_session.reset()
    env = role_env(base_env, moto_session.env, tmp_path)
    ec2 = moto_session.client("ec2")
    zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]]
    variables = {**COMMON, "workbench_name": "full", "workbench_outputs_dir": str(tmp_path / "o")}
    moto_session.set_faults(spot_refused_zones=dict.fromkeys(zones, "SpotMaxPriceTooLow"))
    try:
        refused = run_role(env, **variables)
        assert refused.rc != 0
        (message,) = [m for m in refused.failures() if "failed in every zone tried" in m]
        assert "(us-east-1a, us-east-1b, " in message, message
        assert "ec2_gpu_instance_spot_fallback=true" in message
        assert _spot_instances(ec2, "full") == []

        fallback = run_role(env, **variables, ec2_gpu_instance_spot_fallback=True)
        assert fallback.rc == 0, fallback.describe()
        (instance,) = _spot_instances(ec2, "full")
        assert "InstanceLifecycle" not in instance  # on demand
        (said,) = fallback.results("Say that the workbench launches on demand instead")
        assert "launching on demand" in said["msg"]
        # An on-demand instance may stop itself instead of terminating unfetched outputs.
        (noted,) = fallback.results("Note that the instance can be stopped")
        assert noted["ansible_facts"]["ec2_gpu_instance_outputs"]["can_stop"] is True
    finally:
        moto_session.set_faults()
        gone = run_role(env, **{**variables, "ec2_gpu_instance_state": "absent"})
    assert gone.rc == 0, gone.describe()
