"""stop -> stop again -> start -> start again -> provision on a stopped workbench, against moto.

One workbench of this module's own name is launched (the slow part); the tests read it in
order. moto gives a started instance a new public address, as EC2 does, so the SSH config
entry must follow it.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import MY_ADDRESS, OWNER, PlaybookRun, role_env, run_role

COMMON = {"ec2_gpu_instance_wait_for_ssh": False, "ec2_gpu_instance_ssh_cidr": MY_ADDRESS}
LIVE = ["pending", "running", "shutting-down", "stopping", "stopped"]


class Workbench:
    def __init__(self, name: str, env: dict[str, str], home: Path, ec2, launch: PlaybookRun):
        self.name = name
        self.env = env
        self.home = home
        self.ec2 = ec2
        self.launch = launch

    def role(self, state: str, **variables: Any) -> PlaybookRun:
        return run_role(
            self.env, workbench_name=self.name, ec2_gpu_instance_state=state, **COMMON, **variables
        )

    def instances(self) -> list[dict[str, Any]]:
        reservations = self.ec2.describe_instances(
            Filters=[
                {"Name": "tag:workbench:name", "Values": [self.name]},
                {"Name": "instance-state-name", "Values": LIVE},
            ]
        )["Reservations"]
        return [i for r in reservations for i in r["Instances"]]

    def instance(self) -> dict[str, Any]:
        (inst,) = self.instances()
        return inst

    def entry(self) -> str:
        config = (self.home / ".ssh/config").read_text()
        return config.split(f"Host {self.name}\n", 1)[1].split("# END", 1)[0]


def _changed_tasks(run: PlaybookRun) -> list[str]:
    return [
        t["task"]["name"]
        for p in run.result.get("plays", [])
        for t in p["tasks"]
        if any(h.get("changed") for h in t["hosts"].values())
    ]


def _receipt(run: PlaybookRun) -> str:
    return " ".join(run.results("Show the receipt")[0]["msg"].split())


def _shutdown_behavior(ec2, instance_id: str) -> str:
    attribute = ec2.describe_instance_attribute(
        InstanceId=instance_id, Attribute="instanceInitiatedShutdownBehavior"
    )
    return attribute["InstanceInitiatedShutdownBehavior"]["Value"]


@pytest.fixture(scope="module")
def bench(moto_session, base_env, tmp_path_factory) -> Workbench:
    home = tmp_path_factory.mktemp("home")
    env = role_env(base_env, moto_session.env, home)
    name = f"ss-{secrets.token_hex(3)}"
    wb = Workbench(name, env, home, moto_session.client("ec2"), None)  # type: ignore[arg-type]
    wb.launch = wb.role("present")
    assert wb.launch.rc == 0, wb.launch.describe()
    yield wb
    wb.role("absent")


def test_launch_sets_the_shutdown_behaviour_to_stop_by_default(bench: Workbench) -> None:
    # The idle agent powers the instance off from inside: by default that stops it.
    assert _shutdown_behavior(bench.ec2, bench.instance()["InstanceId"]) == "stop"


def test_launch_takes_the_shutdown_behaviour_from_workbench_idle_action(
    moto_session, base_env, tmp_path: Path
) -> None:
    env = role_env(base_env, moto_session.env, tmp_path / "home")
    name = f"sst-{secrets.token_hex(3)}"
    run = run_role(env, workbench_name=name, workbench_idle_action="terminate", **COMMON)
    assert run.rc == 0, run.describe()
    ec2 = moto_session.client("ec2")
    try:
        assert _shutdown_behavior(ec2, run.info["instance_id"]) == "terminate"
    finally:  # the role's teardown is covered elsewhere; this one only frees moto
        ec2.terminate_instances(InstanceIds=[run.info["instance_id"]])


def test_stop_keeps_the_volume_and_prints_a_receipt(bench: Workbench) -> None:
    before = bench.instance()
    root = before["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    stop = bench.role("stopped")
    assert stop.rc == 0, stop.describe()
    after = bench.instance()
    assert after["InstanceId"] == before["InstanceId"]
    assert after["State"]["Name"] == "stopped"
    # The root volume (image, data, outputs) is still there, still attached.
    (volume,) = bench.ec2.describe_volumes(VolumeIds=[root])["Volumes"]
    assert volume["Attachments"][0]["InstanceId"] == before["InstanceId"]
    receipt = _receipt(stop)
    assert f"{before['InstanceId']} (g4dn.xlarge) stopped after" in receipt, receipt
    assert "USD at 0.526 USD/hour on demand (dated table, 2025-06-01" in receipt, receipt
    assert "the Price List API did not answer (HTTP 500)); spot 0.00001 USD/hour now" in receipt
    # 64 GB of gp3 at 0.08 USD per GB-month, as the role's dated table says.
    assert "its 64 GB of gp3 volume (image, data, outputs) is kept: about 5.12 USD/month" in (
        receipt
    )
    assert "0.08 USD per GB-month of gp3; Amazon EBS pricing page, us-east-1, 2025-06-01" in receipt
    assert "playbooks/start.yml -e workbench_target=aws" in receipt


def test_second_stop_changes_nothing(bench: Workbench) -> None:
    again = bench.role("stopped")
    assert again.rc == 0, again.describe()
    assert again.changed == 0, _changed_tasks(again)
    assert "was stopped already" in _receipt(again)
    assert bench.instance()["State"]["Name"] == "stopped"


def test_start_brings_the_same_instance_back_at_its_new_address(bench: Workbench) -> None:
    (old_entry_line,) = [line for line in bench.entry().splitlines() if "HostName" in line]
    old_address = bench.launch.info["public_ip"]
    assert old_entry_line.split()[-1] == old_address
    connection = bench.home / ".config/wyvern" / bench.name / "connection.json"
    connection.unlink()
    start = bench.role("started")
    assert start.rc == 0, start.describe()
    inst = bench.instance()
    assert inst["InstanceId"] == bench.launch.info["instance_id"]
    assert inst["State"]["Name"] == "running"
    new_address = inst["PublicIpAddress"]
    assert new_address != old_address  # moto, like EC2, gives a started instance a new one
    # Everything keyed to the address follows it: the host Ansible adds, the SSH alias.
    assert start.info["public_ip"] == new_address
    added = start.results("Add the instance to the workbench group")[0]
    assert added["add_host"]["host_vars"]["ansible_host"] == new_address
    assert f"  HostName {new_address}\n" in bench.entry()
    assert old_address not in (bench.home / ".ssh/config").read_text()
    # The host key stays filed under the instance's name: known_hosts is not touched.
    known_hosts = bench.home / ".config/wyvern" / bench.name / "known_hosts"
    assert known_hosts.read_text().startswith(f"wyvern-{bench.name}-{OWNER} ssh-ed25519 ")
    # The connection file the inventory reads is written again.
    saved = json.loads(connection.read_text())
    assert saved["host_key_alias"] == f"wyvern-{bench.name}-{OWNER}"


def test_second_start_changes_nothing(bench: Workbench) -> None:
    again = bench.role("started")
    assert again.rc == 0, again.describe()
    assert again.changed == 0, _changed_tasks(again)
    assert len(bench.instances()) == 1


def test_inventory_finds_the_started_instance_at_its_new_address(
    bench: Workbench, repo_root: Path
) -> None:
    proc = subprocess.run(
        ["ansible-inventory", "-i", str(repo_root / "inventory/aws_ec2.yml"), "--list",
         "-e", f"workbench_name={bench.name}"],
        env=bench.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    hostvars = json.loads(proc.stdout)["_meta"]["hostvars"][f"wyvern-{bench.name}-{OWNER}"]
    host = hostvars["ansible_host"]
    host = host.get("__ansible_unsafe", host) if isinstance(host, dict) else host
    assert host == bench.instance()["PublicIpAddress"]


def test_provision_on_a_stopped_workbench_starts_it_and_launches_none(
    bench: Workbench, repo_root: Path
) -> None:
    stop = bench.role("stopped")
    assert stop.rc == 0, stop.describe()
    stopped_id = bench.instance()["InstanceId"]
    extra = {"workbench_target": "aws", "workbench_name": bench.name, **COMMON}
    proc = subprocess.run(
        ["ansible-playbook", "playbooks/provision.yml", "-e", json.dumps(extra)],
        cwd=repo_root, env=bench.env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    (inst,) = bench.instances()  # exactly one instance carries the workbench's tags
    assert inst["InstanceId"] == stopped_id
    assert inst["State"]["Name"] == "running"
    assert f"  HostName {inst['PublicIpAddress']}\n" in bench.entry()


def test_start_without_an_instance_launches_none_and_says_how(
    moto_session, base_env, tmp_path: Path
) -> None:
    env = role_env(base_env, moto_session.env, tmp_path / "home")
    name = f"ssn-{secrets.token_hex(3)}"
    run = run_role(env, workbench_name=name, ec2_gpu_instance_state="started", **COMMON)
    assert run.rc != 0
    message = " ".join(run.failures()[-1].split())
    assert f"Workbench {name} (owner {OWNER}) has no instance" in message, message
    assert "ansible-playbook site.yml -e workbench_target=aws" in message
    ec2 = moto_session.client("ec2")
    found = ec2.describe_instances(Filters=[{"Name": "tag:workbench:name", "Values": [name]}])
    assert not found["Reservations"]
