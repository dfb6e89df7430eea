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
import yaml

from tests.support.moto import free_port
from tests.support.sshd import ssh_server

from .conftest import (
    MY_ADDRESS,
    OWNER,
    PlaybookRun,
    booted_instance,
    role_env,
    run_role,
    tagged_resources,
    tree_status,
    user_data,
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
def tree_before(repo_root: Path) -> set[str]:
    return tree_status(repo_root)


@pytest.fixture(scope="module")
def scenario(moto_session, base_env, my_address_url, tmp_path_factory, tree_before) -> Scenario:
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
    # moto serves no Price List API: the dated table is the stated fallback, with why, and
    # moto's own spot price history stands beside it (ec2_price_info's answer, not the table).
    launch = " ".join(
        scenario.first.results("Show what will run and what it costs")[0]["msg"].split()
    )
    assert launch.endswith(
        "about 0.526 USD/hour on demand (dated table, 2025-06-01 (AWS EC2 On-Demand pricing page,"
        " Linux, us-east-1): the Price List API did not answer (HTTP 500)); spot 0.00001 USD/hour"
        " now in us-east-1a (EC2 spot price history, 2006-01-02)."
    ), launch
    assert info["price_source"].startswith("dated table, 2025-06-01"), info
    assert info["spot_price"].startswith("spot 0.00001 USD/hour now in us-east-1a"), info
    added = scenario.first.results("Add the instance to the workbench group")[0]
    assert added["add_host"]["groups"] == ["workbench"]
    host_vars = added["add_host"]["host_vars"]
    assert host_vars["ansible_host"] == inst["PublicIpAddress"]
    assert host_vars["ansible_user"] == "ubuntu"
    assert host_vars["ansible_ssh_private_key_file"] == str(scenario.key_path)


def test_present_gives_the_instance_a_host_key_known_before_it_boots(scenario: Scenario) -> None:
    inst = _instance(scenario.ec2)
    config = yaml.safe_load(user_data(scenario.ec2, inst["InstanceId"]))
    host_key = scenario.key_path.parent / "ssh_host_ed25519_key"
    public = " ".join(Path(f"{host_key}.pub").read_text().split()[:2])
    # cloud-init installs exactly this key and makes no other.
    assert config["ssh_keys"]["ed25519_public"].split()[:2] == public.split()
    assert config["ssh_keys"]["ed25519_private"].strip() == host_key.read_text().strip()
    assert config["ssh_genkeytypes"] == [] and config["ssh_deletekeys"] is True
    assert stat.S_IMODE(host_key.stat().st_mode) == 0o600
    # Known before the first connection, filed under the instance's name, not its address.
    known_hosts = scenario.key_path.parent / "known_hosts"
    assert known_hosts.read_text() == f"wyvern-workbench-{OWNER} {public}\n"
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert tags["workbench:host_key"] == "generated"
    # The private host key appears in no output, not even the module's arguments.
    private_body = "".join(host_key.read_text().splitlines()[1:-1])
    output = json.dumps(scenario.first.result) + scenario.first.stderr
    assert private_body[:40] not in output and private_body[-40:] not in output
    added = scenario.first.results("Add the instance to the workbench group")[0]
    args = added["add_host"]["host_vars"]["ansible_ssh_common_args"]
    assert "StrictHostKeyChecking=yes" in args
    assert f"UserKnownHostsFile={known_hosts}" in args
    assert f"HostKeyAlias=wyvern-workbench-{OWNER}" in args


def test_present_writes_the_ssh_alias_for_the_instance(scenario: Scenario) -> None:
    # `ssh workbench` reaches the instance with the workbench's key, checking its host key
    # in the workbench's own known_hosts under the instance's name.
    inst = _instance(scenario.ec2)
    config = (scenario.home / ".ssh/config").read_text()
    assert "# BEGIN wyvern workbench workbench\nHost workbench\n" in config, config
    entry = config.split("Host workbench\n", 1)[1].split("# END", 1)[0]
    known_hosts = scenario.key_path.parent / "known_hosts"
    for line in (
        f"HostName {inst['PublicIpAddress']}",
        "User ubuntu",
        f"IdentityFile {scenario.key_path}",
        f"UserKnownHostsFile {known_hosts}",
        f"HostKeyAlias wyvern-workbench-{OWNER}",
        "StrictHostKeyChecking yes",
    ):
        assert f"  {line}\n" in entry, entry


def test_second_present_changes_nothing_and_waits_for_ssh(
    scenario: Scenario, tmp_path: Path
) -> None:
    before = _instance(scenario.ec2)["InstanceId"]
    known_hosts = scenario.key_path.parent / "known_hosts"
    trusted = known_hosts.read_text()
    # This time the role waits for SSH on the added host; extra vars point that host at a
    # real sshd on loopback that "booted" from the instance's user data. Its host key is
    # checked strictly against the workbench's known_hosts.
    with booted_instance(
        scenario.ec2, before, tmp_path / "sshd", Path(f"{scenario.key_path}.pub")
    ) as sshd:
        again = run_role(
            scenario.env,
            "-e",
            f"ansible_host=127.0.0.1 ansible_port={sshd.port} ansible_user={sshd.user}",
            ec2_gpu_instance_ssh_cidr=MY_ADDRESS,
            ec2_gpu_instance_wait_for_ssh=True,
            ec2_gpu_instance_wait_timeout=60,
        )
    assert again.rc == 0, again.describe()
    waited = again.results("Wait until the instance answers over SSH")[0]
    assert not waited.get("skipped") and waited["elapsed"] < 60, waited
    assert sshd.host_key in known_hosts.read_text()
    assert known_hosts.read_text() == trusted
    assert again.changed == 0, [
        t["task"]["name"]
        for p in again.result["plays"]
        for t in p["tasks"]
        if any(h.get("changed") for h in t["hosts"].values())
    ]
    assert _instance(scenario.ec2)["InstanceId"] == before


def test_a_host_with_another_key_is_refused(scenario: Scenario, tmp_path: Path) -> None:
    # A stand-in with a host key of its own (what a recycled address or a man in the middle
    # would present): the strict check refuses it, and the message says what to look at.
    with ssh_server(tmp_path / "sshd", Path(f"{scenario.key_path}.pub")) as sshd:
        run = run_role(
            scenario.env,
            "-e",
            f"ansible_host=127.0.0.1 ansible_port={sshd.port} ansible_user={sshd.user}",
            ec2_gpu_instance_ssh_cidr=MY_ADDRESS,
            ec2_gpu_instance_wait_for_ssh=True,
            ec2_gpu_instance_wait_timeout=5,
        )
    assert run.rc != 0
    message = " ".join(run.failures()[-1].split())
    assert "did not answer over SSH" in message and "known_hosts" in message, message


def test_ssh_wait_failure_says_what_to_check_and_how_to_tear_down(scenario: Scenario) -> None:
    inst = _instance(scenario.ec2)
    run = run_role(
        scenario.env,
        "-e",
        f"ansible_host=127.0.0.1 ansible_port={free_port()}",
        ec2_gpu_instance_ssh_cidr=MY_ADDRESS,
        ec2_gpu_instance_wait_for_ssh=True,
        ec2_gpu_instance_wait_timeout=5,
    )
    assert run.rc != 0
    message = " ".join(run.failures()[-1].split())
    assert f"Instance {inst['InstanceId']} (wyvern-workbench-{OWNER}) did not answer" in message
    assert f"CIDR {MY_ADDRESS}/32" in message and "firewall" in message
    assert "keeps running and billing (about 0.526 USD/hour)" in message
    assert (
        "ansible-playbook -i inventory/aws_ec2.yml playbooks/teardown.yml -e workbench_target=aws"
        f" -e workbench_name=workbench -e workbench_owner={OWNER}"
    ) in message


def test_a_new_address_updates_the_security_group_in_place(scenario: Scenario) -> None:
    # The owner moved: the next run opens SSH to the new address only, on the same instance.
    before = _instance(scenario.ec2)
    moved = run_role(scenario.env, ec2_gpu_instance_ssh_cidr="198.51.100.9", **COMMON)
    assert moved.rc == 0, moved.describe()
    assert moved.results("Allow SSH from one CIDR and nothing else")[0]["changed"]
    after = _instance(scenario.ec2)
    assert after["InstanceId"] == before["InstanceId"]
    group_id = after["SecurityGroups"][0]["GroupId"]
    group = scenario.ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    cidrs = [r["CidrIp"] for p in group["IpPermissions"] for r in p.get("IpRanges", [])]
    assert cidrs == ["198.51.100.9/32"]
    assert group_id == before["SecurityGroups"][0]["GroupId"]


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
    assert "StrictHostKeyChecking=yes" in host["ansible_ssh_common_args"]
    known_hosts = scenario.key_path.parent / "known_hosts"
    assert f"UserKnownHostsFile={known_hosts}" in host["ansible_ssh_common_args"]
    assert f"HostKeyAlias={mine}" in host["ansible_ssh_common_args"]
    assert host["ec2_gpu_instance_info"]["known_hosts"] == str(known_hosts)
    assert host["ec2_gpu_instance_info"]["host_key_alias"] == mine
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
    # And the owner's own second workbench, exp1, with its local key and host keys.
    exp1_tags = [
        {"Key": "workbench:name", "Value": "exp1"},
        {"Key": "workbench:owner", "Value": OWNER},
    ]
    exp1_instance = ec2.run_instances(
        ImageId=NEWEST_DLAMI,
        InstanceType="g4dn.xlarge",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": exp1_tags}],
    )["Instances"][0]["InstanceId"]
    exp1_group = ec2.create_security_group(
        GroupName=f"wyvern-exp1-{OWNER}",
        Description="exp1",
        TagSpecifications=[{"ResourceType": "security-group", "Tags": exp1_tags}],
    )["GroupId"]
    exp1_key = ec2.create_key_pair(
        KeyName=f"wyvern-exp1-{OWNER}",
        TagSpecifications=[{"ResourceType": "key-pair", "Tags": exp1_tags}],
    )["KeyName"]
    # Another workbench's SSH alias stays when this one's goes.
    ssh_config = scenario.home / ".ssh/config"
    other = "# BEGIN wyvern workbench exp1\nHost exp1\n  HostName 192.0.2.1\n# END wyvern workbench exp1\n"
    ssh_config.write_text(other + ssh_config.read_text())
    exp1_dir = scenario.key_path.parent.parent / "exp1"
    exp1_dir.mkdir()
    for name in ("id_ed25519", "known_hosts", "ssh_host_ed25519_key"):
        (exp1_dir / name).write_text("exp1\n")

    down = run_role(scenario.env, ec2_gpu_instance_state="absent")
    assert down.rc == 0, down.describe()
    left = tagged_resources(ec2, "workbench")
    assert left == {"instances": [], "security_groups": [], "key_pairs": [foreign]}
    assert tagged_resources(ec2, "exp1") == {
        "instances": [exp1_instance],
        "security_groups": [exp1_group],
        "key_pairs": [exp1_key],
    }
    assert sorted(p.name for p in exp1_dir.iterdir()) == [
        "id_ed25519",
        "known_hosts",
        "ssh_host_ed25519_key",
    ]
    state = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] == "terminated"
    receipt = down.results("Show the receipt")[0]["msg"]
    assert instance_id in receipt and "USD at 0.526 USD/hour" in receipt
    assert scenario.key_path.exists(), "the local key is kept unless asked"
    assert not (scenario.key_path.parent / "known_hosts").exists(), "host keys are forgotten"
    assert not (scenario.key_path.parent / "ssh_host_ed25519_key").exists()
    assert ssh_config.read_text() == other, "this workbench's alias goes, the other stays"

    ec2.delete_key_pair(KeyName=foreign)
    again = run_role(
        scenario.env, ec2_gpu_instance_state="absent", ec2_gpu_instance_remove_local_key=True
    )
    assert again.rc == 0, again.describe()
    assert "Nothing was running" in again.results("Show the receipt")[0]["msg"]
    assert not scenario.key_path.exists()
    assert not Path(f"{scenario.key_path}.pub").exists()
    ec2.terminate_instances(InstanceIds=[exp1_instance])


def test_the_runs_wrote_nothing_into_the_checkout(
    scenario: Scenario, tree_before: set[str], repo_root: Path
) -> None:
    # USER is an owner with no account: Ansible's default temporary directory would be
    # "~tester/.ansible/tmp", made relative to the working directory (the checkout) by
    # any task that copies a file to the host (present writes known_hosts).
    assert tree_status(repo_root) - tree_before == set()
