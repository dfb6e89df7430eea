"""A workbench of three nodes against a real moto EC2 server: present -> present again ->
inventory -> absent.

Three instances of one type in one availability zone, tagged with their rank, in one
security group whose only rules are SSH from one address and all traffic between its
members; the launch message shows three times the price; the dynamic inventory gives every
node its rank; teardown leaves nothing. The nodes go into a cluster placement group
(ec2_gpu_instance_placement_group): moto has none, so the test server adds EC2's
(tests/support/moto_server.py; a launch into a group that does not exist fails, and a group
with a live instance cannot be deleted, as on EC2).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from .conftest import MY_ADDRESS, OWNER, role_env, run_role, tagged_resources

NODES = 3


def _instances(ec2) -> list[dict[str, Any]]:
    reservations = ec2.describe_instances(
        Filters=[
            {"Name": "tag:workbench:name", "Values": ["workbench"]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


def _failed_tasks(run: Any) -> list[str]:
    return [
        t["task"]["name"]
        for p in run.result.get("plays", [])
        for t in p["tasks"]
        if any(h.get("failed") for h in t["hosts"].values())
    ]


def _tags(instance: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def test_three_nodes_in_one_zone_reach_each_other_and_go_together(
    moto_session, base_env, my_address_url, tmp_path_factory, repo_root: Path
) -> None:
    moto_session.reset()
    home = tmp_path_factory.mktemp("home")
    env = role_env(base_env, moto_session.env, home)
    ec2 = moto_session.client("ec2")
    settings = {
        "ec2_gpu_instance_ssh_cidr_url": my_address_url,
        "ec2_gpu_instance_wait_for_ssh": False,
        "workbench_nodes": NODES,
        "ec2_gpu_instance_placement_group": True,
    }
    first = run_role(env, **settings)
    assert first.rc == 0, (_failed_tasks(first), first.describe())

    # -- N instances of the same type in one zone, each tagged with its rank.
    instances = sorted(_instances(ec2), key=lambda i: int(_tags(i)["workbench:node"]))
    assert len(instances) == NODES
    name = f"wyvern-workbench-{OWNER}"
    assert [_tags(i)["workbench:node"] for i in instances] == ["0", "1", "2"]
    assert [_tags(i)["Name"] for i in instances] == [name, f"{name}-node1", f"{name}-node2"]
    assert {_tags(i)["workbench:owner"] for i in instances} == {OWNER}
    assert {i["InstanceType"] for i in instances} == {"g4dn.xlarge"}
    assert len({i["Placement"]["AvailabilityZone"] for i in instances}) == 1

    # -- one security group: SSH from one address, every port between its members, nothing else.
    group_ids = {g["GroupId"] for i in instances for g in i["SecurityGroups"]}
    assert len(group_ids) == 1
    (sg,) = ec2.describe_security_groups(GroupIds=list(group_ids))["SecurityGroups"]
    rules = sg["IpPermissions"]
    assert len(rules) == 2, rules
    ssh = next(r for r in rules if r["IpProtocol"] == "tcp")
    assert (ssh["FromPort"], ssh["ToPort"]) == (22, 22)
    assert [r["CidrIp"] for r in ssh["IpRanges"]] == [f"{MY_ADDRESS}/32"]
    members = next(r for r in rules if r["IpProtocol"] == "-1")
    assert [p["GroupId"] for p in members["UserIdGroupPairs"]] == [sg["GroupId"]]
    assert not members.get("IpRanges") and not members.get("Ipv6Ranges")

    # -- one cluster placement group, the workbench's (found again by its tags at teardown).
    (group,) = ec2.describe_placement_groups()["PlacementGroups"]
    assert (group["GroupName"], group["Strategy"]) == (name, "cluster")
    assert {t["Key"]: t["Value"] for t in group["Tags"]}["workbench:owner"] == OWNER

    # -- the launch message is N times the price.
    (shown,) = first.results("Show what the nodes cost together")
    price = 0.526  # the role's table for g4dn.xlarge
    assert f"about {NODES * price:.3f} USD/hour on demand ({NODES} x {price})" in shown["msg"]
    assert f"in the cluster placement group {name}" in shown["msg"]

    # -- a second run changes nothing.
    second = run_role(env, **settings)
    assert second.rc == 0, second.describe()
    assert second.changed == 0, [
        t["task"]["name"]
        for p in second.result["plays"]
        for t in p["tasks"]
        if any(h.get("changed") for h in t["hosts"].values())
    ]
    assert len(_instances(ec2)) == NODES

    # -- the dynamic inventory: every node in the workbench group, with its rank.
    proc = subprocess.run(
        ["ansible-inventory", "-i", str(repo_root / "inventory/aws_ec2.yml"), "--list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    inventory = json.loads(proc.stdout)
    hosts = inventory["workbench"]["hosts"]
    hostvars = inventory["_meta"]["hostvars"]
    ranked = sorted(hosts, key=lambda h: hostvars[h]["workbench_node_rank"])
    assert ranked == [name, f"{name}-node1", f"{name}-node2"]
    assert [hostvars[h]["workbench_node_rank"] for h in ranked] == [0, 1, 2]

    # -- fewer nodes: the one beyond the new size is terminated now, not billed until
    # teardown; node 0 (every output) and node 1 stay; a rerun changes nothing.
    shrink = {**settings, "workbench_nodes": 2}
    smaller = run_role(env, **shrink)
    assert smaller.rc == 0, (_failed_tasks(smaller), smaller.describe())
    left = sorted(_instances(ec2), key=lambda i: int(_tags(i)["workbench:node"]))
    assert [_tags(i)["Name"] for i in left] == [name, f"{name}-node1"]
    assert [i["InstanceId"] for i in left] == [i["InstanceId"] for i in instances[:2]]
    (said,) = smaller.results("Say which nodes were terminated")
    assert f"terminated {name}-node2 ({instances[2]['InstanceId']})" in said["msg"]
    again = run_role(env, **shrink)
    assert again.rc == 0 and again.changed == 0, again.describe()

    # -- stop stops every node; start (which takes no workbench_nodes) starts every node
    # again and keeps the workbench's size: no node is taken for one beyond it.
    plain = {k: v for k, v in settings.items() if k != "workbench_nodes"}
    stopped = run_role(env, **plain, ec2_gpu_instance_state="stopped")
    assert stopped.rc == 0, (_failed_tasks(stopped), stopped.describe())
    assert _instances(ec2) == []
    started = run_role(env, **plain, ec2_gpu_instance_state="started")
    assert started.rc == 0, (_failed_tasks(started), started.describe())
    back = sorted(_instances(ec2), key=lambda i: int(_tags(i)["workbench:node"]))
    assert [i["InstanceId"] for i in back] == [i["InstanceId"] for i in left]
    said = started.results("Say which nodes were terminated")
    assert all(r.get("skipped") for r in said), said

    # -- teardown removes every node, the security group and the key, and checks.
    gone = run_role(env, ec2_gpu_instance_state="absent")
    assert gone.rc == 0, (_failed_tasks(gone), gone.describe())
    assert not any(tagged_resources(ec2, "workbench").values())
    # The group goes after its instances (EC2 refuses to delete one in use).
    assert ec2.describe_placement_groups()["PlacementGroups"] == []
