"""The node filters: names, addresses and each node's torchrun line with c10d settings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

ROOT = Path(__file__).resolve().parents[4]
_spec = importlib.util.spec_from_file_location("nodes_filters", ROOT / "plugins/filter/nodes.py")
assert _spec and _spec.loader
filters = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(filters)

TRAIN = ["-m", "transfer_learning", "train", "--data", "/workspace/data/digits"]


def _opt(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def _conf(argv: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in _opt(argv, "--rdzv-conf").split(","))


def test_every_node_gets_the_same_rendezvous_but_its_own_address_and_host_role() -> None:
    lines = [filters.torchrun_command(TRAIN, 3, i, "abc123", port=29500) for i in range(3)]
    for index, argv in enumerate(lines):
        assert argv[0] == "torchrun"
        assert _opt(argv, "--nnodes") == "3"
        assert _opt(argv, "--nproc-per-node") == "1"
        assert _opt(argv, "--rdzv-backend") == "c10d"
        assert _opt(argv, "--rdzv-endpoint") == "node-000:29500"
        assert _opt(argv, "--rdzv-id") == "abc123"
        assert _opt(argv, "--local-addr") == f"node-{index:03d}"
        assert _opt(argv, "--max-restarts") == "0"
        assert _conf(argv)["is_host"] == ("true" if index == 0 else "false")
        # The command every worker runs comes last, unchanged.
        assert argv[-len(TRAIN) :] == TRAIN
    # Only the node's own address and its host role differ between nodes.
    strip = [[a for a in argv if not a.startswith(("node-00", "join_"))] for argv in lines]
    assert strip[1] == strip[2]


def test_c10d_numbers_nodes_by_sorted_address_so_node_zero_is_rank_zero() -> None:
    # dynamic_rendezvous assigns ranks in sorted(_NodeDesc(addr, pid, local_id)) order.
    addrs = [filters.node_alias(i) for i in range(12)]
    assert sorted(addrs) == addrs
    assert addrs[0] == "node-000"
    assert addrs[11] == "node-011"
    # PyTorch's own ordering, whatever the pids (node 0's agent may have the larger one).
    rdzv = pytest.importorskip("torch.distributed.elastic.rendezvous.dynamic_rendezvous")
    descs = [rdzv._NodeDesc(addr, 10_000 - i, 0) for i, addr in enumerate(reversed(addrs))]
    assert [d.addr for d in sorted(descs)] == addrs


def test_join_is_bounded() -> None:
    conf = _conf(filters.torchrun_command(TRAIN, 2, 1, "r", join_timeout=45))
    assert conf["join_timeout"] == "45"
    assert int(conf["last_call_timeout"]) <= 5
    assert int(conf["close_timeout"]) <= 30
    assert int(conf["read_timeout"]) >= 45


def test_gpus_per_node_and_explicit_addresses() -> None:
    argv = filters.torchrun_command(
        TRAIN, "2", "0", "r", nproc_per_node="8", endpoint="10.0.0.5", local_addr="10.0.0.5"
    )
    assert _opt(argv, "--nproc-per-node") == "8"
    assert _opt(argv, "--rdzv-endpoint") == "10.0.0.5:29400"
    assert _opt(argv, "--local-addr") == "10.0.0.5"


@pytest.mark.parametrize(
    ("kwargs", "variable"),
    [
        ({"nodes": 0}, "run_nodes"),
        ({"nodes": "two"}, "run_nodes"),
        ({"nodes": 1.5}, "run_nodes"),
        ({"nodes": True}, "run_nodes"),
        ({"node": 2}, "node"),
        ({"node": -1}, "node"),
        ({"nproc_per_node": 0}, "run_nproc_per_node"),
        ({"port": 70000}, "run_rdzv_port"),
        ({"join_timeout": "soon"}, "run_join_timeout"),
    ],
)
def test_bad_input_names_the_variable(kwargs: dict[str, object], variable: str) -> None:
    args: dict[str, object] = {"nodes": 2, "node": 0, "run_id": "r"}
    args.update(kwargs)
    with pytest.raises(AnsibleFilterError, match=rf"^{variable} must be a whole number"):
        filters.torchrun_command(TRAIN, **args)


def test_bad_run_id_and_empty_command_fail() -> None:
    with pytest.raises(AnsibleFilterError, match="run_id"):
        filters.torchrun_command(TRAIN, 2, 0, "a,b")
    with pytest.raises(AnsibleFilterError, match="command"):
        filters.torchrun_command([], 2, 0, "r")


def test_node_count_and_names() -> None:
    assert filters.node_count("3") == 3
    assert filters.node_names("wb", 1) == ["wb"]
    assert filters.node_names("wb", 3) == ["wb", "wb-node1", "wb-node2"]
    for bad in (0, "x", None, "", 1000):
        with pytest.raises(AnsibleFilterError, match=r"^workbench_nodes must be"):
            filters.node_count(bad)
    with pytest.raises(AnsibleFilterError, match="workbench_name"):
        filters.node_names("", 2)


def test_node_homes_and_jobs() -> None:
    assert filters.node_homes("/var/lib/wyvern/wb/", 3) == [
        "/var/lib/wyvern/wb",
        "/var/lib/wyvern/wb/nodes/1",
        "/var/lib/wyvern/wb/nodes/2",
    ]
    assert filters.node_jobs(["wb", "wb-node1"], ["1.1", "2.2"], ["/a.log", "/b.log"]) == [
        {"name": "wb", "jid": "1.1", "log_file": "/a.log"},
        {"name": "wb-node1", "jid": "2.2", "log_file": "/b.log"},
    ]
    with pytest.raises(AnsibleFilterError, match="one job and one log per node"):
        filters.node_jobs(["wb", "wb-node1"], ["1.1"], ["/a.log", "/b.log"])


def test_ec2_node_info_takes_the_node_s_own_fields_and_rank() -> None:
    node0 = {"name": "wb", "instance_id": "i-0", "rank": 0, "ssh_user": "ubuntu", "gpus": "1 x T4"}
    instance = {
        "instance_id": "i-2",
        "instance_type": "g4dn.xlarge",
        "placement": {"availability_zone": "us-east-1a"},
        "private_ip_address": "10.0.0.7",
        "tags": {"Name": "wb-node2", "workbench:node": "2"},
    }
    info = filters.ec2_node_info(instance, node0)
    assert info["name"] == "wb-node2" and info["instance_id"] == "i-2" and info["rank"] == 2
    assert info["ssh_user"] == "ubuntu" and info["public_ip"] == ""
    with pytest.raises(AnsibleFilterError, match="workbench:node"):
        filters.ec2_node_info({"instance_id": "i-9", "tags": {}}, node0)


def test_ec2_extra_nodes_are_the_ranks_beyond_the_size_never_node_zero() -> None:
    def node(name: str, rank: str | None, instance_id: str) -> dict:
        tags = {"Name": name, **({"workbench:node": rank} if rank is not None else {})}
        return {"instance_id": instance_id, "tags": tags}

    members = [
        node("wb-node3", "3", "i-3"),
        node("wb", "0", "i-0"),  # node 0 tagged as a node while N > 1
        node("wb-node1", "1", "i-1"),
        node("wb-node2", "2", "i-2"),
        node("wb-odd", "x", "i-x"),  # a tag no node of ours carries: left alone
    ]
    pick = filters.ec2_extra_nodes
    assert [i["instance_id"] for i in pick(members, "wb", 2)] == ["i-2", "i-3"]
    # Down to one: every other node goes; node 0 stays, tagged or not (N = 1 drops the tag).
    assert [i["instance_id"] for i in pick(members, "wb", 1)] == ["i-1", "i-2", "i-3"]
    assert pick([node("wb", None, "i-0")], "wb", 1) == []
    assert pick(members, "wb", "4") == [] and pick([], "wb", 3) == []
    with pytest.raises(AnsibleFilterError, match="workbench_nodes"):
        pick(members, "wb", 0)


def test_ranked_hosts_order_the_machines_of_a_workbench_and_name_their_peers() -> None:
    hostvars = {
        "wb-node1": {
            "workbench_node_rank": "1",
            "ec2_gpu_instance_info": {"private_ip": "10.0.0.8"},
        },
        "wb": {"ec2_gpu_instance_info": {"private_ip": "10.0.0.7"}},  # node 0: no rank yet
        "wb-node2": {"workbench_node_rank": 2, "ec2_gpu_instance_info": {"private_ip": "10.0.0.9"}},
    }
    nodes = filters.ranked_hosts(["wb-node1", "wb", "wb-node2"], hostvars)
    assert [(n["host"], n["rank"]) for n in nodes] == [("wb", 0), ("wb-node1", 1), ("wb-node2", 2)]
    assert filters.node_peers(nodes) == {
        "node-000": "10.0.0.7",
        "node-001": "10.0.0.8",
        "node-002": "10.0.0.9",
    }
    # The local target: this machine alone, rank 0, no address needed.
    assert filters.ranked_hosts(["localhost"], {"localhost": {}})[0]["rank"] == 0


@pytest.mark.parametrize(
    "ranks",
    [[0, 2], [1], [0, 0], [0, 1, 1]],
    ids=["a gap", "no node 0", "two node 0s", "a rank twice"],
)
def test_ranked_hosts_refuse_a_missing_or_doubled_rank(ranks: list[int]) -> None:
    hosts = [f"h{i}" for i in range(len(ranks))]
    hostvars = {h: {"workbench_node_rank": r} for h, r in zip(hosts, ranks, strict=True)}
    with pytest.raises(AnsibleFilterError, match=r"node ranks .* a node is missing"):
        filters.ranked_hosts(hosts, hostvars)


def test_ranked_hosts_refuse_a_bad_rank_and_peers_need_an_address() -> None:
    with pytest.raises(AnsibleFilterError, match="workbench_node_rank of h0 must be"):
        filters.ranked_hosts(["h0"], {"h0": {"workbench_node_rank": "zero"}})
    with pytest.raises(AnsibleFilterError, match="no private address"):
        filters.node_peers([{"host": "wb", "rank": 0, "address": ""}])


def test_peer_known_hosts_names_each_node_s_keys_by_its_alias_and_address() -> None:
    scan = (
        "# 10.0.0.8:22 SSH-2.0-OpenSSH_9.2\n"
        "10.0.0.8 ssh-ed25519 AAAAkey8\n"
        "10.0.0.9 ssh-ed25519 AAAAkey9\n"
        "10.0.0.99 ssh-ed25519 AAAAstranger\n"
    )
    text = filters.peer_known_hosts(scan, {"node-002": "10.0.0.9", "node-001": "10.0.0.8"})
    assert text.splitlines() == [
        "node-001,10.0.0.8 ssh-ed25519 AAAAkey8",
        "node-002,10.0.0.9 ssh-ed25519 AAAAkey9",
    ]
    # A node that did not answer the scan is named, not left out.
    with pytest.raises(AnsibleFilterError, match=r"node-002 \(10.0.0.9\) gave no SSH host key"):
        filters.peer_known_hosts("10.0.0.8 ssh-ed25519 AAAAkey8\n", {"node-002": "10.0.0.9"})


def test_peer_table_gives_node_zero_each_other_node_s_user_and_jupyter_port() -> None:
    nodes = [
        {"host": "wb", "rank": 0, "address": "10.0.0.7"},
        {"host": "wb-node1", "rank": 1, "address": "10.0.0.8"},
    ]
    hostvars = {
        "wb": {"notebook_status": {"url": "http://127.0.0.1:8888"}, "ansible_user": "ubuntu"},
        "wb-node1": {"notebook_status": {"url": "http://127.0.0.1:8890"}, "ansible_user": "ubuntu"},
    }
    assert filters.peer_table(nodes, hostvars) == [
        {"rank": 1, "host": "node-001", "user": "ubuntu", "port": 8890}
    ]
    hostvars["wb-node1"]["notebook_status"] = {}
    with pytest.raises(AnsibleFilterError, match=r"node 1 \(wb-node1\) reports no notebook URL"):
        filters.peer_table(nodes, hostvars)
