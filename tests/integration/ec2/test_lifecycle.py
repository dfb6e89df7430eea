"""present -> present again -> inventory -> absent, against a real moto EC2 server.

One instance is provisioned per module (provisioning is the slow part); the tests read it
in order and the last one tears it down.
"""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.sshd import SshServer

from .conftest import (
    MY_ADDRESS,
    OWNER,
    PlaybookRun,
    role_env,
    run_role,
    tagged_resources,
)

# Newest x86_64 "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04)" in moto_amis.json.
NEWEST_DLAMI = "ami-0d122a0000000002"
COMMON = {"ec2_gpu_instance_wait_for_ssh": False}


class Scenario:
    def __init__(self, env: dict[str, str], home: Path, ec2, first: PlaybookRun) -> None:
        self.env = env
        self.home = home
        self.ec2 = ec2
        self.first = first

    @property
    def key_path(self) -> Path:
        return self.home / ".config/wyvern/workbench/id_ed25519"


@pytest.fixture(scope="module")
def scenario(moto_session, base_env, my_address_url, tmp_path_factory) -> Scenario:
    moto_session.reset()
    home = tmp_path_factory.mktemp("home")
    env = role_env(base_env, moto_session.env, home)
    # The SSH CIDR is detected through the (loopback) "what is my address" URL.
    first = run_role(env, ec2_gpu_instance_ssh_cidr_url=my_address_url, **COMMON)
    assert first.rc == 0, first.describe()
    return Scenario(env, home, moto_session.client("ec2"), first)


def _instance(ec2) -> dict[str, Any]:
    reservations = ec2.describe_instances(
        Filters=[
            {"Name": "tag:workbench:name", "Values": ["workbench"]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )["Reservations"]
    instances = [i for r in reservations for i in r["Instances"]]
    assert len(instances) == 1, instances
    return instances[0]


def test_present_creates_the_expected_instance(scenario: Scenario) -> None:
    inst = _instance(scenario.ec2)
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert tags["workbench:name"] == "workbench"
    assert tags["workbench:owner"] == OWNER
    assert tags["Name"] == f"wyvern-workbench-{OWNER}"
    assert inst["InstanceType"] == "g4dn.xlarge"
    assert inst["ImageId"] == NEWEST_DLAMI
    assert inst["MetadataOptions"]["HttpTokens"] == "required"
    assert inst["MetadataOptions"]["HttpEndpoint"] == "enabled"
    # us-east-1e has a default subnet but no g4dn: the role must not pick it.
    assert inst["Placement"]["AvailabilityZone"] != "us-east-1e"
    assert inst["KeyName"] == f"wyvern-workbench-{OWNER}"

    root = next(m for m in inst["BlockDeviceMappings"] if m["DeviceName"] == "/dev/sda1")
    assert root["Ebs"]["DeleteOnTermination"] is True
    volume = scenario.ec2.describe_volumes(VolumeIds=[root["Ebs"]["VolumeId"]])["Volumes"][0]
    assert (volume["Size"], volume["VolumeType"], volume["Encrypted"]) == (64, "gp3", True)


def test_present_opens_only_ssh_from_the_detected_address(scenario: Scenario) -> None:
    inst = _instance(scenario.ec2)
    group_ids = [g["GroupId"] for g in inst["SecurityGroups"]]
    assert len(group_ids) == 1
    group = scenario.ec2.describe_security_groups(GroupIds=group_ids)["SecurityGroups"][0]
    rules = [
        (p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), r["CidrIp"])
        for p in group["IpPermissions"]
        for r in p.get("IpRanges", [])
    ]
    assert rules == [("tcp", 22, 22, f"{MY_ADDRESS}/32")]
    assert all(not p.get("Ipv6Ranges") for p in group["IpPermissions"])
    tags = {t["Key"]: t["Value"] for t in group["Tags"]}
    assert (tags["workbench:name"], tags["workbench:owner"]) == ("workbench", OWNER)


def test_present_imports_only_the_public_half_of_a_private_local_key(scenario: Scenario) -> None:
    key = scenario.key_path
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    public = Path(f"{key}.pub").read_text().split()
    assert public[0] == "ssh-ed25519"
    pairs = scenario.ec2.describe_key_pairs(
        Filters=[{"Name": "tag:workbench:name", "Values": ["workbench"]}]
    )["KeyPairs"]
    assert [p["KeyName"] for p in pairs] == [f"wyvern-workbench-{OWNER}"]
    assert pairs[0]["KeyType"] == "ed25519"


def test_present_reports_the_instance_and_its_price(scenario: Scenario) -> None:
    info = scenario.first.info
    inst = _instance(scenario.ec2)
    assert info["instance_id"] == inst["InstanceId"]
    assert info["public_ip"] == inst["PublicIpAddress"]
    assert info["private_ip"] == inst["PrivateIpAddress"]
    assert info["ami_id"] == NEWEST_DLAMI
    assert info["ami_name"].startswith(
        "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04)"
    )
    assert info["ssh_user"] == "ubuntu"
    assert info["hourly_price"] == pytest.approx(0.526)
    assert info["price_date"] and info["price_source"]
    added = scenario.first.results("Add the instance to the workbench group")[0]
    assert added["add_host"]["groups"] == ["workbench"]
    host_vars = added["add_host"]["host_vars"]
    assert host_vars["ansible_host"] == inst["PublicIpAddress"]
    assert host_vars["ansible_user"] == "ubuntu"
    assert host_vars["ansible_ssh_private_key_file"] == str(scenario.key_path)


def test_second_present_changes_nothing_and_waits_for_ssh(
    scenario: Scenario, loopback_sshd: SshServer
) -> None:
    before = _instance(scenario.ec2)["InstanceId"]
    # This time the role waits for SSH on the added host; extra vars point that host at a
    # real sshd on loopback that trusts the workbench key, as e2e tests do.
    loopback_sshd.authorized_keys.write_text(Path(f"{scenario.key_path}.pub").read_text())
    again = run_role(
        scenario.env,
        "-e",
        f"ansible_host=127.0.0.1 ansible_port={loopback_sshd.port} ansible_user={loopback_sshd.user}",
        ec2_gpu_instance_ssh_cidr=MY_ADDRESS,
        ec2_gpu_instance_wait_for_ssh=True,
        ec2_gpu_instance_wait_timeout=60,
    )
    assert again.rc == 0, again.describe()
    waited = again.results("Wait until the instance answers over SSH")[0]
    assert not waited.get("skipped") and waited["elapsed"] < 60, waited
    # The host key was trusted on first use into the workbench's own known_hosts.
    known_hosts = scenario.key_path.parent / "known_hosts"
    assert loopback_sshd.host_key in known_hosts.read_text()
    assert again.changed == 0, [
        t["task"]["name"]
        for p in again.result["plays"]
        for t in p["tasks"]
        if any(h.get("changed") for h in t["hosts"].values())
    ]
    assert _instance(scenario.ec2)["InstanceId"] == before


def _unwrap(value: Any) -> Any:
    # ansible-inventory marks untrusted strings as {"__ansible_unsafe": "..."}.
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def test_inventory_lists_the_instance_with_connection_variables(
    scenario: Scenario, repo_root: Path
) -> None:
    # Someone else's workbench of the same name in the same account: listed in the keyed
    # group, but not in `workbench`, which the playbooks target. And a second workbench of
    # our own, which `-e workbench_name=exp1` selects instead.
    ec2 = scenario.ec2

    def launch(name: str, owner: str) -> str:
        return ec2.run_instances(
            ImageId="ami-0c22a00000000002",
            InstanceType="g4dn.xlarge",
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [
                        {"Key": "workbench:name", "Value": name},
                        {"Key": "workbench:owner", "Value": owner},
                        {"Key": "Name", "Value": f"wyvern-{name}-{owner}"},
                    ],
                }
            ],
        )["Instances"][0]["InstanceId"]

    def list_inventory(*extra: str) -> dict[str, Any]:
        proc = subprocess.run(
            ["ansible-inventory", "-i", str(repo_root / "inventory/aws_ec2.yml"), "--list", *extra],
            env=scenario.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        return _unwrap(json.loads(proc.stdout))

    others = [launch("workbench", "someone-else"), launch("exp1", OWNER)]
    try:
        inventory = list_inventory()
        exp1 = list_inventory("-e", "workbench_name=exp1")
    finally:
        ec2.terminate_instances(InstanceIds=others)

    assert exp1["workbench"]["hosts"] == [f"wyvern-exp1-{OWNER}"]

    mine = f"wyvern-workbench-{OWNER}"
    assert inventory["workbench"]["hosts"] == [mine]
    assert sorted(inventory["workbench_workbench"]["hosts"]) == sorted(
        [mine, "wyvern-workbench-someone-else"]
    )
    host = inventory["_meta"]["hostvars"][mine]
    inst = _instance(ec2)
    assert host["ansible_host"] == inst["PublicIpAddress"]
    assert host["ansible_user"] == "ubuntu"
    assert host["ansible_ssh_private_key_file"] == str(scenario.key_path)
    assert "StrictHostKeyChecking=accept-new" in host["ansible_ssh_common_args"]
    assert host["ansible_python_interpreter"] == "/usr/bin/python3"
    assert host["ec2_gpu_instance_info"]["instance_id"] == inst["InstanceId"]

    # -e ec2_gpu_instance_use_private_ip=true switches ansible_host to the private address.
    proc = subprocess.run(
        [
            "ansible-inventory",
            "-i",
            str(repo_root / "inventory/aws_ec2.yml"),
            "--host",
            mine,
            "-e",
            "ec2_gpu_instance_use_private_ip=true",
        ],
        env=scenario.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert _unwrap(json.loads(proc.stdout))["ansible_host"] == inst["PrivateIpAddress"]


def test_absent_leaves_nothing_tagged_and_prints_a_receipt(scenario: Scenario) -> None:
    ec2 = scenario.ec2
    # Another owner's resources with the same workbench name must survive the teardown.
    foreign = ec2.create_key_pair(
        KeyName="wyvern-workbench-someone-else",
        TagSpecifications=[
            {
                "ResourceType": "key-pair",
                "Tags": [
                    {"Key": "workbench:name", "Value": "workbench"},
                    {"Key": "workbench:owner", "Value": "someone-else"},
                ],
            }
        ],
    )["KeyName"]
    instance_id = _instance(ec2)["InstanceId"]

    down = run_role(scenario.env, ec2_gpu_instance_state="absent")
    assert down.rc == 0, down.describe()
    left = tagged_resources(ec2, "workbench")
    assert left == {"instances": [], "security_groups": [], "key_pairs": [foreign]}
    state = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] == "terminated"
    receipt = down.results("Show the receipt")[0]["msg"]
    assert instance_id in receipt and "USD at 0.526 USD/hour" in receipt
    assert scenario.key_path.exists(), "the local key is kept unless asked"
    assert not (scenario.key_path.parent / "known_hosts").exists(), "host keys are forgotten"

    ec2.delete_key_pair(KeyName=foreign)
    again = run_role(
        scenario.env, ec2_gpu_instance_state="absent", ec2_gpu_instance_remove_local_key=True
    )
    assert again.rc == 0, again.describe()
    assert "Nothing was running" in again.results("Show the receipt")[0]["msg"]
    assert not scenario.key_path.exists()
    assert not Path(f"{scenario.key_path}.pub").exists()
