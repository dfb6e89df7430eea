"""site.yml end to end with -e workbench_target=aws.

The EC2 API is moto's server on loopback; the instance it "launches" is stood in for by a
real sshd on loopback: the test points the host's address there with extra variables, so
the roles, the module, the tunnel and the fetch all go over real SSH.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import requests

from tests.support.moto import free_port
from tests.support.playbook import forget_host_outputs, run_playbook
from tests.support.sshd import ssh_server

NAME = "wb-e2e-aws"
TAG_FILTER = [{"Name": "tag:workbench:name", "Values": [NAME]}]


@pytest.fixture
def aws_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    return home


@pytest.fixture
def instance_key(aws_home: Path) -> Path:
    # Made before provisioning, so that the stand-in sshd already trusts it; the role
    # finds it and imports only its public half.
    key = aws_home / ".config" / "wyvern" / NAME / "id_ed25519"
    key.parent.mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def tagged_resources(ec2) -> dict[str, list]:
    instances = [
        i["InstanceId"]
        for r in ec2.describe_instances(Filters=TAG_FILTER)["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    ]
    groups = [
        g["GroupId"] for g in ec2.describe_security_groups(Filters=TAG_FILTER)["SecurityGroups"]
    ]
    keys = [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"] if NAME in k["KeyName"]]
    return {"instances": instances, "security_groups": groups, "key_pairs": keys}


def test_aws_target_lifecycle(
    repo_root, ansible_env, moto, docker_client, aws_home, instance_key, tmp_path
) -> None:
    forget_host_outputs(NAME)
    env = {
        **ansible_env,
        **moto.env,
        "HOME": str(aws_home),
        "XDG_CONFIG_HOME": str(aws_home / ".config"),
        "ANSIBLE_HOST_KEY_CHECKING": "False",
    }
    outputs = tmp_path / "outputs"
    notebook_port = free_port()
    tunnel_port = free_port()
    ec2 = moto.client("ec2")

    with ssh_server(tmp_path / "sshd", instance_key.with_suffix(".pub")) as sshd:
        extra = {
            "workbench_target": "aws",
            "workbench_name": NAME,
            "workbench_outputs_dir": str(outputs),
            "ec2_gpu_instance_ssh_cidr": "203.0.113.7/32",
            "notebook_port": notebook_port,
            # The stand-in for the instance: everything that connects to it goes here.
            "ansible_host": sshd.host,
            "ansible_port": sshd.port,
            "ansible_user": sshd.user,
            # sshd is up before the instance "boots": a failure to connect is a real one.
            "ec2_gpu_instance_wait_timeout": 60,
        }
        site = run_playbook(repo_root, "site.yml", env, extra)
        assert site.rc == 0, site.tail(80)
        resources = tagged_resources(ec2)
        assert len(resources["instances"]) == 1 and resources["security_groups"], resources
        assert f"Host {NAME}" in (aws_home / ".ssh" / "config").read_text()
        assert f"ssh -N -L {notebook_port}:127.0.0.1:{notebook_port} {NAME}" in site.output
        assert docker_client.containers.get(NAME).status == "running"

        again = run_playbook(repo_root, "site.yml", env, extra)
        assert again.rc == 0, again.tail(80)
        assert again.changed == 0, again.tail(150)
        assert tagged_resources(ec2)["instances"] == resources["instances"]

        tunnel_vars = {
            **extra,
            "tunnel_local_port": tunnel_port,
            "tunnel_remote_port": notebook_port,
        }
        tunnel = run_playbook(repo_root, "playbooks/tunnel.yml", env, tunnel_vars)
        assert tunnel.rc == 0, tunnel.tail()
        # The notebook, bound to the host's loopback only, answers on our side of the tunnel.
        assert "version" in requests.get(f"http://127.0.0.1:{tunnel_port}/api", timeout=10).json()
        closed = run_playbook(
            repo_root, "playbooks/tunnel.yml", env, {**tunnel_vars, "tunnel_state": "absent"}
        )
        assert closed.rc == 0, closed.tail()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{tunnel_port}/api", timeout=5)

        inventory = ["inventory/aws_ec2.yml"]
        tiny = {"run_epochs": 1, "run_image_size": 32, "run_limit": 200}
        run = run_playbook(repo_root, "playbooks/run.yml", env, {**extra, **tiny}, inventory)
        assert run.rc == 0, run.tail(80)
        (host_dir,) = outputs.iterdir()  # named after the instance's Name tag
        (run_dir,) = host_dir.iterdir()
        assert json.loads((run_dir / "metrics.json").read_text())["epochs"]

        down = run_playbook(repo_root, "playbooks/teardown.yml", env, extra, inventory)
        assert down.rc == 0, down.tail(80)
        assert tagged_resources(ec2) == {"instances": [], "security_groups": [], "key_pairs": []}
        assert f"Host {NAME}" not in (aws_home / ".ssh" / "config").read_text()

        down_again = run_playbook(repo_root, "playbooks/teardown.yml", env, extra, inventory)
        assert down_again.rc == 0, down_again.tail(80)
        assert down_again.changed == 0, down_again.tail(150)
        assert (run_dir / "metrics.json").exists()
        assert NAME not in {c.name for c in docker_client.containers.list(all=True)}
