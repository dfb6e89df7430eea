"""Durable outputs on moto: bucket, role and profile made before the instance; teardown
brings home what S3 holds (the instance already gone, as after a spot reclaim) and then
leaves no bucket, role or profile behind.
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
from pathlib import Path

import pytest

from .conftest import OWNER, PlaybookRun, role_env, run_role

COMMON = {"ec2_gpu_instance_wait_for_ssh": False, "ec2_gpu_instance_ssh_cidr": "203.0.113.7/32"}
ROLE = f"wyvern-workbench-{OWNER}"
RUN = "run-0123abcd"


class Scenario:
    def __init__(self, env, home: Path, moto, first: PlaybookRun) -> None:
        self.env, self.home, self.moto, self.first = env, home, moto, first
        self.ec2 = moto.client("ec2")
        self.s3 = moto.client("s3")
        self.iam = moto.client("iam")
        self.sts = moto.client("sts")

    @property
    def bucket(self) -> str:
        account = self.sts.get_caller_identity()["Account"]
        return f"wyvern-{account}-us-east-1-{OWNER}"

    @property
    def outputs_dir(self) -> Path:
        return self.home / "outputs" / ROLE / "workbench"


@pytest.fixture(scope="module")
def scenario(moto_session, base_env, tmp_path_factory) -> Scenario:
    moto_session.reset()
    home = tmp_path_factory.mktemp("home")
    env = role_env(base_env, moto_session.env, home)
    first = run_role(env, workbench_outputs_dir=str(home / "outputs"), **COMMON)
    assert first.rc == 0, first.describe()
    return Scenario(env, home, moto_session, first)


def _instance(ec2) -> dict:
    reservations = ec2.describe_instances(
        Filters=[
            {"Name": "tag:workbench:name", "Values": ["workbench"]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )["Reservations"]
    (instance,) = [i for r in reservations for i in r["Instances"]]
    return instance


def test_the_bucket_is_encrypted_and_closed_to_the_public(scenario: Scenario) -> None:
    s3, bucket = scenario.s3, scenario.bucket
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert block == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }


def test_the_instance_carries_a_profile_allowed_only_its_prefix(scenario: Scenario) -> None:
    iam = scenario.iam
    profile = iam.get_instance_profile(InstanceProfileName=ROLE)["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [ROLE]
    assert _instance(scenario.ec2)["IamInstanceProfile"]["Arn"] == profile["Arn"]
    role = iam.get_role(RoleName=ROLE)["Role"]
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    assert iam.list_role_policies(RoleName=ROLE)["PolicyNames"] == ["wyvern-durable-outputs"]
    assert iam.list_attached_role_policies(RoleName=ROLE)["AttachedPolicies"] == []
    document = iam.get_role_policy(RoleName=ROLE, PolicyName="wyvern-durable-outputs")
    policy = document["PolicyDocument"]
    policy = json.loads(policy) if isinstance(policy, str) else policy
    arn = f"arn:aws:s3:::{scenario.bucket}"
    assert [s["Resource"] for s in policy["Statement"]] == [
        f"{arn}/workbench/*",
        arn,
        "arn:aws:ec2:*:*:instance/*",
    ]
    assert policy["Statement"][1]["Condition"] == {
        "StringLike": {"s3:prefix": ["workbench", "workbench/*"]}
    }
    # On demand, the instance may stop instances carrying its own profile (the idle agent's
    # stop instead of terminate), and do nothing else in EC2.
    stop = policy["Statement"][2]
    assert stop["Action"] == "ec2:StopInstances"
    (pattern,) = stop["Condition"]["ArnLike"].values()
    assert fnmatch.fnmatchcase(profile["Arn"], pattern), (profile["Arn"], pattern)


def test_the_launch_says_where_outputs_go(scenario: Scenario) -> None:
    (shown,) = scenario.first.results("Show where the durable outputs go")
    assert f"s3://{scenario.bucket}/workbench/outputs/" in shown["msg"]


def test_a_second_present_changes_nothing(scenario: Scenario) -> None:
    again = run_role(scenario.env, workbench_outputs_dir=str(scenario.home / "outputs"), **COMMON)
    assert again.rc == 0, again.describe()
    assert again.changed == 0, [
        t["task"]["name"]
        for p in again.result["plays"]
        for t in p["tasks"]
        if any(h.get("changed") for h in t["hosts"].values())
    ]


def test_teardown_after_the_instance_died_brings_s3_home_and_leaves_nothing(
    scenario: Scenario,
) -> None:
    s3, bucket = scenario.s3, scenario.bucket
    # What the instance's agent uploaded before a spot reclaim terminated it mid-run.
    files = {
        f"{RUN}/checkpoint.pt": b"\x00checkpoint bytes\x01" * 100,
        f"{RUN}/progress.json": b'{"state": "stopped", "epoch": 2}',
        f"{RUN}/interruption.json": b'{"action": "terminate"}',
    }
    for name, body in files.items():
        s3.put_object(Bucket=bucket, Key=f"workbench/outputs/{name}", Body=body)
    scenario.ec2.terminate_instances(InstanceIds=[_instance(scenario.ec2)["InstanceId"]])

    gone = run_role(
        scenario.env,
        workbench_outputs_dir=str(scenario.home / "outputs"),
        ec2_gpu_instance_state="absent",
        **COMMON,
    )
    assert gone.rc == 0, gone.describe()
    for name, body in files.items():
        assert (scenario.outputs_dir / name).read_bytes() == body
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert ROLE not in [r["RoleName"] for r in scenario.iam.list_roles()["Roles"]]
    profiles = scenario.iam.list_instance_profiles()["InstanceProfiles"]
    assert ROLE not in [p["InstanceProfileName"] for p in profiles]


def test_run_yml_with_the_instance_gone_fetches_from_s3(
    moto_session, base_env, tmp_path, repo_root: Path
) -> None:
    """playbooks/run.yml after a spot reclaim: no instance, the checkpoint comes from S3."""
    moto_session.reset()
    env = role_env(base_env, moto_session.env, tmp_path)
    s3 = moto_session.client("s3")
    account = moto_session.client("sts").get_caller_identity()["Account"]
    bucket = f"wyvern-{account}-us-east-1-{OWNER}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=f"workbench/outputs/{RUN}/checkpoint.pt", Body=b"ckpt")
    s3.put_object(Bucket=bucket, Key=f"workbench/outputs/{RUN}/interruption.json", Body=b"{}")
    proc = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            str(repo_root / "inventory/aws_ec2.yml"),
            str(repo_root / "playbooks/run.yml"),
            "-e",
            json.dumps(
                {"workbench_target": "aws", "workbench_outputs_dir": str(tmp_path / "outputs")}
            ),
        ],
        env={**env, "ANSIBLE_STDOUT_CALLBACK": "default"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "No running instance of workbench workbench" in proc.stdout, proc.stdout[-3000:]
    local = tmp_path / "outputs" / ROLE / "workbench" / RUN
    assert (local / "checkpoint.pt").read_bytes() == b"ckpt"
    assert (local / "interruption.json").exists()
