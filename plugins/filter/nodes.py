"""Filters for a workbench of N nodes: node names and addresses, and each node's torchrun line.

One distributed run is N `torchrun` agents, one per node, meeting through PyTorch's c10d
rendezvous (a TCPStore hosted by node 0's agent); no launcher of our own. Unit tests:
tests/unit/plugins/filter/test_nodes.py.

Why `--local-addr` and not `--node-rank`: the c10d rendezvous ignores `--node-rank` (torchrun
says so and drops it). It numbers the nodes by sorting their descriptors, whose first field
is the node's address (`--local-addr`, else the FQDN). Each node therefore passes a name
that sorts in node order and that the other nodes resolve to it (`node-000`, `node-001`, ...:
a network alias on the local target, a hosts entry elsewhere). Node 0, the notebook the user
opens, gets group rank 0, so rank 0's outputs and progress.json are where the run role and
the user look; and node 0's name is also the address every rank reaches rank 0 on
(MASTER_ADDR). `is_host` says which agent hosts the store: the endpoint is an alias, not the
machine's hostname, so torchrun could not tell by itself.

Bounded time: `join_timeout` caps how long the agents wait for all N nodes (a node that
cannot join fails every agent after it), `--max-restarts 0` makes a failed worker fail its
agent at once (the others then leave the rendezvous and fail too), and the store's
`read_timeout` bounds a lost store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from ansible.errors import AnsibleFilterError

DEFAULT_PORT = 29400
DEFAULT_JOIN_TIMEOUT = 120
# Rank 0 may be alone on a big host: 999 nodes is far beyond any workbench.
MAX_NODES = 999
ALIAS_PREFIX = "node-"
# Left in each line of `torchrun_templates` for the workload's `transfer_learning.nodes`
# (a run started from node 0's notebook) to fill in: the run id and the workers' command.
RUN_ID_FIELD = "{run_id}"
COMMAND_FIELD = "{command}"


def _int(value: Any, name: str, minimum: int, maximum: int | None = None) -> int:
    """`value` as an int in range, or an error that names the variable and the fix."""
    bad = isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())
    try:
        number = int(str(value).strip()) if not isinstance(value, int | float) else int(value)
    except (TypeError, ValueError):
        bad = True
        number = 0
    if bad or number < minimum or (maximum is not None and number > maximum):
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise AnsibleFilterError(
            f"{name} must be a whole number >= {minimum}{upper}, not {value!r}; "
            f"fix it (for example -e {name}={minimum})"
        )
    return number


def node_count(value: Any, name: str = "workbench_nodes") -> int:
    """The number of nodes, checked: `{{ workbench_nodes | wyvern.workbench.node_count }}`."""
    return _int(value, name, 1, MAX_NODES)


def node_names(name: str, nodes: Any, var: str = "workbench_nodes") -> list[str]:
    """The containers (or instances) of a workbench in node order: node 0 is the workbench
    itself (the notebook the user opens), then `<name>-node1`, `<name>-node2`, ..."""
    count = node_count(nodes, var)
    if not str(name or "").strip():
        raise AnsibleFilterError("the workbench name is empty; set workbench_name")
    return [name] + [f"{name}-node{index}" for index in range(1, count)]


def node_homes(notebook_home: str, nodes: Any, var: str = "run_nodes") -> list[str]:
    """Each node's folder on a host holding all of them (its outputs/, data/, workspace/):
    node 0 is the notebook's own notebook_home, node i is notebook_home/nodes/<i>."""
    count = node_count(nodes, var)
    home = str(notebook_home).rstrip("/")
    return [home] + [f"{home}/nodes/{index}" for index in range(1, count)]


def node_jobs(
    names: Sequence[str], jids: Sequence[str], logs: Sequence[str]
) -> list[dict[str, str]]:
    """The nodes of a distributed run for action run_progress: name, job id, log file."""
    if not len(names) == len(jids) == len(logs):
        raise AnsibleFilterError(
            f"node_jobs needs one job and one log per node: {len(names)} nodes, "
            f"{len(jids)} jobs, {len(logs)} logs"
        )
    return [
        {"name": str(n), "jid": str(j), "log_file": str(log)}
        for n, j, log in zip(names, jids, logs, strict=True)
    ]


def ec2_node_info(instance: dict[str, Any], node0: dict[str, Any]) -> dict[str, Any]:
    """A node instance's record (as amazon.aws.ec2_instance_info returns it), in the shape
    of node 0's ec2_gpu_instance_info, with its rank from the tag workbench:node."""
    tags = instance.get("tags") or {}
    if "workbench:node" not in tags:
        raise AnsibleFilterError(
            f"instance {instance.get('instance_id')} has no workbench:node tag; it is not a node"
        )
    return {
        **node0,
        "name": tags.get("Name") or instance.get("instance_id"),
        "instance_id": instance.get("instance_id"),
        "instance_type": instance.get("instance_type"),
        "availability_zone": (instance.get("placement") or {}).get("availability_zone"),
        "public_ip": instance.get("public_ip_address") or "",
        "private_ip": instance.get("private_ip_address") or "",
        "launch_time": instance.get("launch_time"),
        "rank": _int(tags["workbench:node"], "the workbench:node tag", 0, MAX_NODES - 1),
    }


def ec2_extra_nodes(instances: Any, node0_name: str, nodes: Any) -> list[dict[str, Any]]:
    """The instances of a workbench (as amazon.aws.ec2_instance_info returns them) that are
    nodes beyond its size now: `workbench_nodes` was lowered. Node 0 (named `node0_name`)
    is never one; an instance is a node by its workbench:node tag, ranks 1..N-1 stay."""
    size = _int(nodes, "workbench_nodes", 1, MAX_NODES)
    extra = []
    for instance in instances or []:
        tags = instance.get("tags") or {}
        rank = tags.get("workbench:node")
        if tags.get("Name") == node0_name or rank is None:
            continue
        try:
            number = int(str(rank))
        except ValueError:
            continue  # not one of ours: a node's tag is always a number
        if number >= size:
            extra.append(instance)
    return sorted(extra, key=lambda i: int(str(i["tags"]["workbench:node"])))


def ranked_hosts(hosts: Any, hostvars: Any, var: str = "workbench_nodes") -> list[dict[str, Any]]:
    """The hosts of a workbench whose nodes are machines of their own (aws: one instance, one
    notebook container per node), in rank order: each as `host`, `rank` (its
    workbench_node_rank, 0 where there is none: a single instance) and `address` (the
    private address its peers reach it at, from ec2_gpu_instance_info).

    The ranks must be 0..N-1, each once: a missing or doubled rank (a node that is not
    running, two workbenches in one group) fails here, before any node starts a run.
    """
    nodes = []
    for host in list(hosts or []):
        facts = hostvars[host]
        rank = _int(facts.get("workbench_node_rank", 0), f"workbench_node_rank of {host}", 0)
        info = facts.get("ec2_gpu_instance_info") or {}
        nodes.append(
            {"host": str(host), "rank": rank, "address": str(info.get("private_ip") or "")}
        )
    nodes.sort(key=lambda node: node["rank"])
    ranks = [node["rank"] for node in nodes]
    if ranks != list(range(len(nodes))):
        raise AnsibleFilterError(
            f"the workbench's hosts have node ranks {ranks}, not 0..{len(nodes) - 1}: a node is "
            f"missing (not running?) or two workbenches share the group; start every node with "
            f"`ansible-playbook site.yml -e workbench_target=aws -e {var}={len(nodes) or 1}` "
            "(same -e workbench_name)"
        )
    return nodes


def node_peers(nodes: Sequence[dict[str, Any]]) -> dict[str, str]:
    """The names each node's container resolves its peers by (`node-000` ... for ranks
    0..N-1, as torchrun_command uses them) to their private addresses, for the containers'
    extra_hosts (`ranked_hosts` gives the nodes)."""
    peers = {}
    for node in nodes:
        address = str(node.get("address") or "")
        if not address:
            raise AnsibleFilterError(
                f"node {node.get('rank')} ({node.get('host')}) has no private address in "
                "ec2_gpu_instance_info; the nodes of a workbench reach each other at their "
                "private addresses (use the dynamic inventory, inventory/aws_ec2.yml)"
            )
        peers[node_alias(node.get("rank"))] = address
    return peers


def node_alias(index: Any, var: str = "node index") -> str:
    """The name node `index` is reached by inside the workbench, sorting in node order."""
    return f"{ALIAS_PREFIX}{_int(index, var, 0, MAX_NODES - 1):03d}"


def torchrun_command(
    command: Sequence[Any],
    nodes: Any,
    node: Any,
    run_id: str,
    nproc_per_node: Any = 1,
    port: Any = DEFAULT_PORT,
    join_timeout: Any = DEFAULT_JOIN_TIMEOUT,
    endpoint: str | None = None,
    local_addr: str | None = None,
) -> list[str]:
    """Node `node`'s argv: torchrun with the c10d rendezvous, then `command` (`-m pkg ...`
    or a script and its arguments) run by every worker.

    `endpoint` (node 0's address) and `local_addr` (this node's) default to the aliases of
    `node_alias`. Every node of one run gets the same line but for `--local-addr` and
    `is_host`.
    """
    count = node_count(nodes, "run_nodes")
    index = _int(node, "node", 0, count - 1)
    procs = _int(nproc_per_node, "run_nproc_per_node", 1, 1024)
    tcp_port = _int(port, "run_rdzv_port", 1, 65535)
    join = _int(join_timeout, "run_join_timeout", 1)
    if not str(run_id or "").strip() or any(c.isspace() or c in ",=" for c in str(run_id)):
        raise AnsibleFilterError(
            f"run_id {run_id!r} cannot name a rendezvous (empty, or with a space, ',' or '=')"
        )
    argv = [str(part) for part in command or []]
    if not argv:
        raise AnsibleFilterError("torchrun_command needs the command every worker runs")
    host = endpoint or node_alias(0)
    conf = {
        "join_timeout": join,
        # min == max == N: nothing to wait for once all are in.
        "last_call_timeout": 1,
        "close_timeout": 10,
        "read_timeout": max(60, join),
        "is_host": "true" if index == 0 else "false",
    }
    return [
        "torchrun",
        "--nnodes",
        str(count),
        "--nproc-per-node",
        str(procs),
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"{host}:{tcp_port}",
        "--rdzv-id",
        str(run_id),
        "--rdzv-conf",
        ",".join(f"{key}={value}" for key, value in conf.items()),
        "--local-addr",
        local_addr or node_alias(index),
        "--max-restarts",
        "0",
        *argv,
    ]


def torchrun_templates(
    nodes: Any,
    nproc_per_node: Any = 1,
    port: Any = DEFAULT_PORT,
    join_timeout: Any = DEFAULT_JOIN_TIMEOUT,
) -> list[list[str]]:
    """Every node's `torchrun_command` line, in node order, with the run id and the workers'
    command left as `{run_id}` and `{command}` (the last item): node 0's container holds
    them (WYVERN_TORCHRUN) so that its notebook starts a run across the nodes with the
    same lines as playbooks/run.yml."""
    count = node_count(nodes, "workbench_nodes")
    return [
        torchrun_command(
            [COMMAND_FIELD], count, index, RUN_ID_FIELD, nproc_per_node, port, join_timeout
        )
        for index in range(count)
    ]


def peer_known_hosts(scan: Any, peers: Any) -> str:
    """A known_hosts file for node 0's container, from `ssh-keyscan` of the other nodes'
    private addresses (`scan`: its output) and `peers` (node_peers without node 0): each
    key under the name the container reaches that node by and its address. A node that did
    not answer fails here, naming it."""
    keys: dict[str, list[str]] = {}
    for line in str(scan or "").splitlines():
        fields = line.split()
        if len(fields) >= 3 and not line.startswith("#"):
            keys.setdefault(fields[0], []).append(" ".join(fields[1:3]))
    lines = []
    for alias, address in sorted(dict(peers or {}).items()):
        found = keys.get(str(address))
        if not found:
            raise AnsibleFilterError(
                f"{alias} ({address}) gave no SSH host key: is that instance running, and does "
                "the workbench's security group let its members reach each other? Start every "
                "node with `ansible-playbook site.yml -e workbench_target=aws -e workbench_nodes=N`"
            )
        lines += [f"{alias},{address} {key}" for key in found]
    return "\n".join(lines) + "\n"


def peer_table(nodes: Sequence[dict[str, Any]], hostvars: Any) -> list[dict[str, Any]]:
    """How node 0's container reaches nodes 1..N-1 (`ranked_hosts` gives the nodes): each
    node's rank, name (node-001, ...), SSH login user and Jupyter port on its own loopback
    (from its notebook_status)."""
    table = []
    for node in list(nodes)[1:]:
        facts = hostvars[node["host"]]
        url = str((facts.get("notebook_status") or {}).get("url") or "")
        try:
            port = urlsplit(url).port
        except ValueError:
            port = None
        if port is None:
            raise AnsibleFilterError(
                f"node {node['rank']} ({node['host']}) reports no notebook URL with a port "
                f"({url!r}); its notebook must be started in the same play"
            )
        user = facts.get("ansible_user") or facts.get("ansible_user_id") or "root"
        table.append(
            {
                "rank": node["rank"],
                "host": node_alias(node["rank"]),
                "user": str(user),
                "port": port,
            }
        )
    return table


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "node_count": node_count,
            "node_names": node_names,
            "node_alias": node_alias,
            "ec2_node_info": ec2_node_info,
            "ec2_extra_nodes": ec2_extra_nodes,
            "node_homes": node_homes,
            "node_jobs": node_jobs,
            "ranked_hosts": ranked_hosts,
            "node_peers": node_peers,
            "torchrun_command": torchrun_command,
            "torchrun_templates": torchrun_templates,
            "peer_known_hosts": peer_known_hosts,
            "peer_table": peer_table,
        }
