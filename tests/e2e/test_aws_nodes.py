"""A workbench of two instances end to end: site.yml, run.yml, teardown.yml with
-e workbench_target=aws -e workbench_nodes=2.

moto "launches" two instances; each is stood in for by a real sshd at the public address EC2
gave it (tests/support/sshd.py, one StandInInstance per rank), with the node's private
address on the loopback too, where the other node reaches it. Both stand-ins are this
machine, so both nodes' notebook containers run on this Docker engine, each on the host's
network as on an instance of its own: node 0 is `<name>`, node 1 `<name>-node1`, each with
its own folder and Jupyter port, as the roles name them by rank.

What the test holds: every node configured by the same plays; each container on its host's
network with its peers named (node-000, node-001 -> the private addresses) and Jupyter on
the loopback only; one torchrun run across both instances whose ranks sit on node 0 and node
1 and train on disjoint halves; only node 0's outputs come home; a second run.yml changes
nothing; a node lost mid-run fails the run on both promptly with its log; teardown leaves
no instance or container behind on either node and loses no output.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import shutil
import time
from collections.abc import Iterator

import pytest
import requests

from tests.e2e.test_aws_target import (  # noqa: F401  (fixtures)
    _changed_tasks,
    aws_env,
    aws_home,
    instance_key,
    tagged_resources,
)
from tests.integration.test_nodes_local import _notebook_run
from tests.support.cleanup import remove_workbench
from tests.support.outputs import host_notebook_home, run_outputs_dir
from tests.support.playbook import run_playbook, run_playbook_until_training
from tests.support.ports import reserved_port
from tests.support.sshd import StandInInstance

RUN = {
    "run_epochs": 1,
    "run_limit": 64,
    "run_image_size": 16,
    "run_batch_size": 8,
    "run_poll_interval": 1,
    "run_join_timeout": 60,
}


@pytest.fixture
def name(docker_client) -> Iterator[str]:
    import secrets

    workbench = f"wbn-{secrets.token_hex(2)}"
    yield workbench
    for container in (workbench, f"{workbench}-node1"):
        remove_workbench(docker_client, container)
    for rank in (0, 1):
        shutil.rmtree(host_notebook_home(workbench, rank), ignore_errors=True)


def _instances(ec2, name: str) -> list[dict]:
    reservations = ec2.describe_instances(
        Filters=[
            {"Name": "tag:workbench:name", "Values": [name]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )["Reservations"]
    found = [i for r in reservations for i in r["Instances"]]
    return sorted(found, key=lambda i: int(_tags(i).get("workbench:node", "0")))


def _failures(output: str) -> str:
    """Each failed task of a playbook's output with the lines that say why."""
    lines, picked, task = output.splitlines(), [], ""
    for index, line in enumerate(lines):
        if line.startswith("TASK ["):
            task = line
        elif line.startswith(("fatal:", "failed:")):
            picked += [task, *lines[index : index + 12]]
    return "\n".join(picked)


def _tags(instance: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def test_two_instances_train_one_run_and_go_together(
    repo_root,
    moto,
    docker_client,
    notebook_image: str,  # built once per content, before any play
    name: str,
    instance_key,  # noqa: F811
    aws_env,  # noqa: F811
    tmp_path,
) -> None:
    env = aws_env
    outputs = tmp_path / "outputs"
    ec2 = moto.client("ec2")
    alias = f"wyvern-{name}-{env.get('USER') or 'workbench'}"
    # Where the stand-ins' sshd reads the key the notebook role authorizes for node 0 (an
    # instance's is the login user's ~/.ssh/authorized_keys).
    peer_keys = tmp_path / "peer_authorized_keys"
    stand_ins = [
        StandInInstance(
            ec2, name, tmp_path / f"sshd{rank}", instance_key.with_suffix(".pub"), rank, peer_keys
        )
        for rank in (0, 1)
    ]
    with contextlib.ExitStack() as stack:
        # Each node's Jupyter port (two instances would both use 8888; here they share a
        # machine), picked by rank as the inventory gives it; the rendezvous port too.
        ports = [stack.enter_context(reserved_port()) for _ in range(3)]
        for stand_in in stand_ins:
            stack.enter_context(stand_in)
        extra = {
            "workbench_target": "aws",
            "workbench_name": name,
            "workbench_nodes": 2,
            "workbench_outputs_dir": str(outputs),
            "workbench_notebooks_dir": str(tmp_path / "notebooks"),
            "ec2_gpu_instance_ssh_cidr": "203.0.113.7/32",
            "ec2_gpu_instance_ssh_user": getpass.getuser(),
            "ec2_gpu_instance_wait_timeout": 60,
            # No S3 agent here: tests/e2e/test_aws_target.py covers it (node 0 only).
            "ec2_gpu_instance_durable_outputs": False,
            "notebook_port": f"{{{{ {ports[:2]}[workbench_node_rank | default(0) | int] }}}}",
            "run_rdzv_port": ports[2],
            "notebook_peers_authorized_keys": str(peer_keys),
        }
        site = run_playbook(repo_root, "site.yml", env, extra)
        for stand_in in stand_ins:
            assert stand_in.error is None, stand_in.error
        assert site.rc == 0, _failures(site.output) or site.tail(80)
        node0, node1 = _instances(ec2, name)
        assert [_tags(i)["workbench:node"] for i in (node0, node1)] == ["0", "1"]
        assert _tags(node1)["Name"] == f"{alias}-node1"
        # Every node was configured by the same plays, in parallel.
        assert f"ok: [{alias}]" in site.output and f"ok: [{alias}-node1]" in site.output

        # -- each node's container: on its host's network, its peers named by their private
        # addresses, Jupyter on the loopback only.
        peers = {"node-000": node0["PrivateIpAddress"], "node-001": node1["PrivateIpAddress"]}
        containers = [docker_client.containers.get(n) for n in (name, f"{name}-node1")]
        for container, port in zip(containers, ports[:2], strict=True):
            assert container.status == "running"
            assert container.attrs["HostConfig"]["NetworkMode"] == "host"
            hosts = sorted(container.attrs["HostConfig"]["ExtraHosts"])
            assert hosts == sorted(f"{k}:{v}" for k, v in peers.items()), hosts
            assert requests.get(f"http://127.0.0.1:{port}/api", timeout=10).ok
            with pytest.raises(requests.ConnectionError):
                requests.get(f"http://{node0['PrivateIpAddress']}:{port}/api", timeout=5)
        # Node 1 reaches node 0 by its name (its private address), as torchrun will.
        reach = containers[1].exec_run(
            ["python", "-c", "import socket; print(socket.gethostbyname('node-000'))"]
        )
        assert reach.output.decode().strip() == peers["node-000"], reach.output
        # The user's notebooks live on node 0 alone.
        assert (host_notebook_home(name) / "workspace" / "notebooks").is_dir()
        node1_home = host_notebook_home(name, 1)
        assert not list((node1_home / "workspace" / "notebooks").glob("*.ipynb"))

        # -- node 0's notebook starts a run across both instances: node 1's Jupyter (on its
        # loopback only) is reached through an SSH forward, with a key node 1 accepts for
        # that forward alone.
        started = _notebook_run(containers[0], host_notebook_home(name), "from-notebook")
        shown = started.output.decode()
        assert started.exit_code == 0, shown[-3000:]
        assert "torchrun on 2 node(s)" in shown and "epoch 1/1" in shown, shown[-3000:]
        nb_run = host_notebook_home(name) / "outputs" / "from-notebook"
        assert json.loads((nb_run / "metrics.json").read_text())["world_size"] == 2
        nb_placement = json.loads((nb_run / "environment.json").read_text())["distributed"]
        assert [(r["rank"], r["node_rank"]) for r in nb_placement["ranks"]] == [(0, 0), (1, 1)]
        assert sorted(p.name for p in (node1_home / "outputs" / "from-notebook").iterdir()) == [
            "node-1.log",
            "node-1.rc",
            "progress.json",
        ]
        # The forward is closed after the run; the key opens no shell and no other port.
        ps = containers[0].exec_run(["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"])
        assert b"ssh" not in ps.output.replace(b"sshd", b""), ps.output[-2000:]
        ssh = [
            "ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", "UserKnownHostsFile=/run/wyvern/peers/known_hosts",
            "-i", "/run/wyvern/peers/id_ed25519",
        ]  # fmt: skip
        user = getpass.getuser()
        shell = containers[0].exec_run([*ssh, f"{user}@node-001", "echo", "opened"])
        assert shell.exit_code != 0 and b"opened" not in shell.output, shell.output
        other = containers[0].exec_run([*ssh, "-W", f"127.0.0.1:{ports[0]}", f"{user}@node-001"])
        assert other.exit_code != 0 and b"prohibited" in other.output, other.output
        # Node 0's peers folder: the key and the tokens readable by the notebook user alone,
        # none of it in the container's environment.
        peers_dir = host_notebook_home(name) / "peers"
        assert oct(peers_dir.stat().st_mode & 0o777) == "0o700"
        assert oct((peers_dir / "id_ed25519").stat().st_mode & 0o777) == "0o600"
        assert oct((peers_dir / "token-1").stat().st_mode & 0o777) == "0o600"
        node1_token = (node1_home / "token").read_text().strip()
        assert (peers_dir / "token-1").read_text().strip() == node1_token
        container_env = " ".join(containers[0].attrs["Config"]["Env"])
        assert node1_token not in container_env and "WYVERN_PEERS=" in container_env
        assert node1_token not in site.output

        # -- one run across both instances, through the dynamic inventory, as a later day's
        # command: no SSH master connection left by site.yml (ControlPersist) to lean on, so
        # every node is reached with the inventory's own connection settings.
        def later(step: str) -> dict[str, str]:
            return {**env, "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path / f"cp-{step}")}

        inventory = ["inventory/aws_ec2.yml"]
        run = run_playbook(
            repo_root, "playbooks/run.yml", later("run"), {**extra, **RUN}, inventory
        )
        assert run.rc == 0, _failures(run.output) or run.tail(80)
        # Beside the run: the notebook that started the run above, saved outside
        # notebooks/, kept as a stray of node 0's workspace.
        home = run_outputs_dir(outputs, alias, name)
        (run_dir,) = [p for p in home.iterdir() if p.name != "workspace"]
        assert (home / "workspace" / "distributed.ipynb").is_file()
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["world_size"] == 2 and metrics["dist_backend"] == "gloo"
        placement = json.loads((run_dir / "environment.json").read_text())["distributed"]
        assert placement["nodes"] == 2 and placement["world_size"] == 2
        assert [(r["rank"], r["node_rank"]) for r in placement["ranks"]] == [(0, 0), (1, 1)]
        assert placement["first_epoch"]["overlap"] == 0
        assert "epoch 1/1: loss" in run.output, run.tail(80)
        # Node 1 ran its rank (its torchrun log is on its instance) and holds no output;
        # nothing of node 1 came home: the run is node 0's.
        node1_run = node1_home / "outputs" / run_dir.name
        assert sorted(p.name for p in node1_run.iterdir()) == ["node-1.log", "progress.json"]
        assert (run_dir / "node-0.log").is_file()
        assert sorted(p.name for p in outputs.iterdir() if p.is_dir()) == [alias]

        again = run_playbook(
            repo_root, "playbooks/run.yml", later("again"), {**extra, **RUN}, inventory
        )
        assert again.rc == 0, again.tail(80)
        assert again.changed == 0, _changed_tasks(again.output)
        # Configuring the nodes again changes nothing: node 0's key, its authorization on
        # node 1, the peers folder and both containers stay as they are.
        configured = run_playbook(
            repo_root, "playbooks/notebook.yml", later("notebook"), extra, inventory
        )
        assert configured.rc == 0, _failures(configured.output) or configured.tail(80)
        assert configured.changed == 0, _changed_tasks(configured.output)

        # -- node 1's instance loses its node mid-run (its container killed): the run fails
        # on both instances promptly, with node 1's log, and is not taken for done.
        killed: dict[str, float] = {}

        def kill_node1(_record: dict) -> None:
            containers[1].kill()
            killed["at"] = time.monotonic()

        longer = {**extra, **RUN, "run_epochs": 30}
        lost, lost_dir = run_playbook_until_training(
            repo_root,
            ["playbooks/run.yml", "-i", inventory[0], "-e", json.dumps(longer)],
            later("lost"),
            host_notebook_home(name) / "outputs",
            tmp_path / "lost.log",
            kill_node1,
            epoch=1,
        )
        assert lost.rc != 0, lost.output[-3000:]
        assert time.monotonic() - killed["at"] < 120, "the run outlived its lost node"
        flat = " ".join(lost.output.split())
        assert "The distributed run failed on" in flat, lost.output[-3000:]
        assert f"--- {name}-node1: the last lines of its log" in flat, lost.output[-3000:]
        assert lost_dir.name != run_dir.name
        assert not (run_outputs_dir(outputs, alias, name) / lost_dir.name / "run.json").exists()

        # No token and no part of node 0's peer key in any playbook's output (at any
        # verbosity the environment sets), in either container's inspect, or in the outputs.
        key_body = "".join((peers_dir / "id_ed25519").read_text().splitlines()[1:-1])
        secrets_ = {"node 0's token": (host_notebook_home(name) / "token").read_text().strip()}
        secrets_ |= {"node 1's token": node1_token, "the peer key": key_body[20:60]}
        down = run_playbook(repo_root, "playbooks/teardown.yml", later("down"), extra, inventory)
        assert down.rc == 0, _failures(down.output) or down.tail(80)
        told = site.output + run.output + again.output + configured.output + lost.output
        told += down.output + repr([c.attrs for c in containers])
        kept = "".join(p.read_text(errors="replace") for p in outputs.rglob("*") if p.is_file())
        for what, secret in secrets_.items():
            assert secret and secret not in told and secret not in kept, what
        assert tagged_resources(ec2, name) == {
            "instances": [],
            "security_groups": [],
            "key_pairs": [],
        }
        present = {c.name for c in docker_client.containers.list(all=True)}
        assert not {name, f"{name}-node1"} & present
        assert (run_dir / "metrics.json").exists()
