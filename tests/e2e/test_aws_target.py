"""site.yml end to end with -e workbench_target=aws.

The EC2 API is moto's server on loopback; the instance it "launches" is stood in for by a
real sshd that boots as the instance would: at the public address EC2 gave the instance
(put on the loopback interface), port 22, with the host key from the instance's user data.
Nothing overrides the connection: Ansible, rsync, ssh and the tunnel reach it through the
inventory and the SSH config entry, and check its host key against the workbench's own
known_hosts, as they do for a real instance.

What the local end-to-end test covers (the notebook's run, its idempotence, the image) and
what tests/integration/ec2 covers against moto (the role's second run changing nothing,
the SSH alias, the receipt's figures) is not repeated here: this test holds the wiring of
the aws target together, with a workbench name of its own per run and a small run.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import pwd
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.integration.durable.support import FakeImds
from tests.support.browser import DEVICE_OUTPUT, chromium_page, run_device_cell_in_jupyterlab
from tests.support.cleanup import remove_workbench
from tests.support.outputs import host_notebook_home, run_outputs_dir
from tests.support.playbook import run_playbook
from tests.support.ports import reserved_port
from tests.support.sshd import StandInInstance

# The notebook's run: the local end-to-end test covers the model; this one the fetch.
SMALL_RUN = {"run_epochs": 1, "run_image_size": 16, "run_limit": 40}


@pytest.fixture
def name(docker_client) -> Iterator[str]:
    """A workbench name of this run's own: a new container and host directory (the notebook
    role's /var/lib/wyvern/<name>), so nothing an earlier run left can look done."""
    # Short: the tunnel's ControlMaster socket, ~/.ssh/wyvern-<name>.ctl plus ssh's random
    # suffix, must fit a Unix socket path (108 bytes) under pytest's tmp HOME.
    workbench = f"wbaws-{secrets.token_hex(2)}"
    yield workbench
    remove_workbench(docker_client, workbench)
    shutil.rmtree(host_notebook_home(workbench), ignore_errors=True)


@pytest.fixture
def aws_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    return home


@pytest.fixture
def aws_env(ansible_env, moto, aws_home: Path) -> dict[str, str]:
    """The control node's environment for the aws target: moto's endpoint and credentials,
    a HOME of the test's own (SSH config, ~/.config/wyvern), host keys checked."""
    return {
        **{k: v for k, v in ansible_env.items() if k != "ANSIBLE_HOST_KEY_CHECKING"},
        **moto.env,
        "HOME": str(aws_home),
        "XDG_CONFIG_HOME": str(aws_home / ".config"),
    }


@pytest.fixture
def instance_key(aws_home: Path, name: str) -> Path:
    # Made before provisioning, so that the stand-in sshd already trusts it; the role
    # finds it and imports only its public half.
    key = aws_home / ".config" / "wyvern" / name / "id_ed25519"
    key.parent.mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def tagged_resources(ec2, name: str) -> dict[str, list]:
    tag_filter = [{"Name": "tag:workbench:name", "Values": [name]}]
    instances = [
        i["InstanceId"]
        for r in ec2.describe_instances(Filters=tag_filter)["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    ]
    groups = [
        g["GroupId"] for g in ec2.describe_security_groups(Filters=tag_filter)["SecurityGroups"]
    ]
    keys = [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"] if name in k["KeyName"]]
    return {"instances": instances, "security_groups": groups, "key_pairs": keys}


OTHER_ENTRY = """# BEGIN wyvern workbench other
Host other
  HostName 192.0.2.1
# END wyvern workbench other
"""


def _flat(output: str) -> str:
    """The output with its line wrapping undone (the YAML callback wraps long messages)."""
    return " ".join(output.split())


def _changed_tasks(output: str) -> list[str]:
    tasks, current = [], ""
    for line in output.splitlines():
        if line.startswith("TASK ["):
            current = line
        elif line.startswith("changed:"):
            tasks.append(current)
    return tasks


def _assert_ssh_reaches(ssh_config: Path, name: str) -> None:
    """`ssh <name>` as the user types it, through the SSH config entry, in batch mode."""
    probe = subprocess.run(
        ["ssh", "-F", str(ssh_config), "-o", "BatchMode=yes", name, "echo", "reached"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.strip() == "reached", probe.stderr


def _check_jupyterlab_through_tunnel(
    summary: str, ssh_config: Path, name: str, tunnel_port: int
) -> None:
    """The token as the summary says to read it (over ssh), then JupyterLab in Chromium."""
    match = re.search(rf"Token: ssh {re.escape(name)} sudo cat ([^\s'\"]+)", summary)
    assert match, summary
    read = ["cat", match[1]] if os.getuid() == 0 else ["sudo", "cat", match[1]]
    token = subprocess.run(
        ["ssh", "-F", str(ssh_config), "-o", "BatchMode=yes", name, *read],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    with chromium_page() as page:
        shown = run_device_cell_in_jupyterlab(
            page, f"http://127.0.0.1:{tunnel_port}/lab", token, "jupyterlab-aws-tunnel"
        )
    assert DEVICE_OUTPUT.search(shown), shown


def test_aws_target_lifecycle(
    repo_root,
    moto,
    docker_client,
    notebook_image: str,  # built once per content, under the image lock, before any play
    name: str,
    aws_home,
    instance_key,
    aws_env,
    tmp_path,
) -> None:
    env = aws_env
    outputs = tmp_path / "outputs"
    ports = contextlib.ExitStack()
    notebook_port = ports.enter_context(reserved_port())
    tunnel_port = ports.enter_context(reserved_port())
    ec2 = moto.client("ec2")
    ssh_config = aws_home / ".ssh" / "config"
    # Another workbench of the same owner has its entry in the SSH config already.
    ssh_config.write_text(OTHER_ENTRY)
    ssh_config.chmod(0o600)
    known_hosts = aws_home / ".config" / "wyvern" / name / "known_hosts"
    alias = f"wyvern-{name}-{env.get('USER') or 'workbench'}"

    stand_in = StandInInstance(ec2, name, tmp_path / "sshd", instance_key.with_suffix(".pub"))
    # The instance's metadata service: the instance profile's credentials for the agent
    # that copies outputs to (moto's) S3.
    imds = FakeImds()
    ports.callback(imds.down)
    with ports, stand_in:
        extra = {
            "workbench_target": "aws",
            "workbench_name": name,
            "workbench_outputs_dir": str(outputs),
            "ec2_gpu_instance_ssh_cidr": "203.0.113.7/32",
            # The stand-in's login user (the AMI's would be ubuntu); tagged on the instance
            # like any other, so the inventory uses it as well.
            "ec2_gpu_instance_ssh_user": getpass.getuser(),
            "notebook_port": notebook_port,
            "ec2_gpu_instance_wait_timeout": 60,
            "workbench_notebooks_dir": str(tmp_path / "notebooks"),
            "durable_outputs_imds_url": imds.url,
        }
        site = run_playbook(repo_root, "site.yml", env, extra)
        assert stand_in.error is None, stand_in.error
        assert site.rc == 0, site.tail(80)
        sshd = stand_in.server
        assert sshd is not None and sshd.port == 22
        resources = tagged_resources(ec2, name)
        assert len(resources["instances"]) == 1 and resources["security_groups"], resources
        (instance,) = [
            i
            for r in ec2.describe_instances(InstanceIds=resources["instances"])["Reservations"]
            for i in r["Instances"]
        ]
        assert sshd.host == instance["PublicIpAddress"]
        # The host key that Ansible checked was known before the first connection.
        assert known_hosts.read_text() == f"{alias} {sshd.host_key}\n"
        config = ssh_config.read_text()
        assert OTHER_ENTRY in config
        entry = config.split(f"Host {name}\n", 1)[1].split("# END", 1)[0]
        assert f"HostName {instance['PublicIpAddress']}" in entry
        assert f"UserKnownHostsFile {known_hosts}" in entry
        assert f"HostKeyAlias {alias}" in entry
        assert "StrictHostKeyChecking yes" in entry
        # `ssh <name>` as the user types it, checked against that known_hosts only.
        _assert_ssh_reaches(ssh_config, name)
        assert known_hosts.read_text() == f"{alias} {sshd.host_key}\n"
        # ssh's own ~/.ssh/known_hosts (of the account, whatever HOME says) learnt nothing.
        for home in {aws_home, Path(pwd.getpwuid(os.getuid()).pw_dir)}:
            user_known = home / ".ssh" / "known_hosts"
            text = user_known.read_text() if user_known.exists() else ""
            assert instance["PublicIpAddress"] not in text and alias not in text
        # The price as the playbooks print it: at launch and in the report.
        assert "about 0.526 USD/hour until `teardown`" in _flat(site.output), site.tail(80)
        # moto serves no Price List API: the dated table, said so with why; moto's spot price.
        price = (
            "0.526 USD/hour on demand (dated table, 2025-06-01 (AWS EC2 On-Demand pricing page,"
            " Linux, us-east-1): the Price List API did not answer (HTTP 500)); spot 0.00001"
            " USD/hour now in us-east-1a (EC2 spot price history, 2006-01-02)"
        )
        assert f"SSH from 203.0.113.7/32; about {price}." in _flat(site.output), site.tail(80)
        report = price.replace(" on demand (", " on demand while it runs (", 1)
        assert f": about {report}" in _flat(site.output), site.tail(80)
        assert f"ssh -N -L {notebook_port}:127.0.0.1:{notebook_port} {name}" in site.output
        assert docker_client.containers.get(name).status == "running"

        tunnel_vars = {
            **extra,
            "tunnel_local_port": tunnel_port,
            "tunnel_remote_port": notebook_port,
        }
        tunnel = run_playbook(repo_root, "playbooks/tunnel.yml", env, tunnel_vars)
        assert tunnel.rc == 0, tunnel.tail()
        # The notebook, bound to the host's loopback only, answers on our side of the tunnel.
        assert "version" in requests.get(f"http://127.0.0.1:{tunnel_port}/api", timeout=10).json()
        # The notebooks round trip over SSH: the project started with the example and was
        # pushed at start; an edit saved through Jupyter (as the browser saves) comes home
        # with the next sync (run.yml's, before its fetch) and stays through teardown.
        project = tmp_path / "notebooks"
        assert (project / "transfer_learning.ipynb").is_file()
        contents = f"http://127.0.0.1:{tunnel_port}/api/contents/notebooks/transfer_learning.ipynb"
        token = (host_notebook_home(name) / "token").read_text().strip()
        headers = {"Authorization": f"token {token}"}
        notebook = requests.get(contents, headers=headers, timeout=30).json()["content"]
        edit = {"cell_type": "markdown", "id": "edited-over-ssh", "metadata": {}, "source": ["#"]}
        notebook["cells"].insert(0, edit)
        saved = requests.put(
            contents,
            headers=headers,
            json={"type": "notebook", "format": "json", "content": notebook},
            timeout=30,
        )
        assert saved.status_code == 200, saved.text
        # A person's browser on this side of the tunnel uses JupyterLab with the token.
        _check_jupyterlab_through_tunnel(site.output, ssh_config, name, tunnel_port)
        # A second tunnel.yml finds the tunnel open and changes nothing.
        tunnel_again = run_playbook(repo_root, "playbooks/tunnel.yml", env, tunnel_vars)
        assert tunnel_again.rc == 0, tunnel_again.tail()
        assert tunnel_again.changed == 0, _changed_tasks(tunnel_again.output)
        closed = run_playbook(
            repo_root, "playbooks/tunnel.yml", env, {**tunnel_vars, "tunnel_state": "absent"}
        )
        assert closed.rc == 0, closed.tail()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{tunnel_port}/api", timeout=5)

        inventory = ["inventory/aws_ec2.yml"]
        run = run_playbook(repo_root, "playbooks/run.yml", env, {**extra, **SMALL_RUN}, inventory)
        assert run.rc == 0, run.tail(80)
        # run.yml brings the notebooks home before its fetch: the edit saved over the tunnel.
        assert "pulled to the control node: transfer_learning.ipynb" in run.output, run.tail(80)
        # Keyed by the inventory host (the instance's Name tag) and the workbench.
        (run_dir,) = run_outputs_dir(outputs, alias, name).iterdir()
        assert json.loads((run_dir / "metrics.json").read_text())["epochs"]
        # The agent on the instance has put the finished run in the workbench's S3 prefix.
        s3 = moto.client("s3")
        (bucket,) = [
            b["Name"] for b in s3.list_buckets()["Buckets"] if b["Name"].startswith("wyvern-")
        ]
        key = f"{name}/outputs/{run_dir.name}/metrics.json"
        deadline = time.monotonic() + 30
        while key not in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]:
            assert time.monotonic() < deadline, f"{key} not in s3://{bucket}"
            time.sleep(0.5)

        # Stop and start through SSH: the instance stops (sshd goes away with it), starts at
        # the new address EC2 gives it, and the same notebook answers there with the same
        # token; the SSH config entry and `ssh <name>` follow the new address.
        first_address = instance["PublicIpAddress"]
        stopped = run_playbook(repo_root, "playbooks/stop.yml", env, extra)
        assert stopped.rc == 0, stopped.tail(80)
        assert "USD/month" in _flat(stopped.output), stopped.tail(80)
        state = ec2.describe_instances(InstanceIds=resources["instances"])["Reservations"][0]
        assert state["Instances"][0]["State"]["Name"] == "stopped"
        stopped_again = run_playbook(repo_root, "playbooks/stop.yml", env, extra)
        assert stopped_again.rc == 0, stopped_again.tail(80)
        assert stopped_again.changed == 0, _changed_tasks(stopped_again.output)
        started = run_playbook(repo_root, "playbooks/start.yml", env, extra)
        assert stand_in.error is None, stand_in.error
        assert started.rc == 0, started.tail(80)
        (restarted,) = [
            i
            for r in ec2.describe_instances(InstanceIds=resources["instances"])["Reservations"]
            for i in r["Instances"]
        ]
        new_address = restarted["PublicIpAddress"]
        assert new_address != first_address, "moto gives a started instance a new address"
        assert stand_in.boots == [first_address, new_address], stand_in.boots
        entry = ssh_config.read_text().split(f"Host {name}\n", 1)[1].split("# END", 1)[0]
        assert f"HostName {new_address}" in entry, entry
        _assert_ssh_reaches(ssh_config, name)
        assert (host_notebook_home(name) / "token").read_text().strip() == token
        started_again = run_playbook(repo_root, "playbooks/start.yml", env, extra)
        assert started_again.rc == 0, started_again.tail(80)
        assert started_again.changed == 0, _changed_tasks(started_again.output)

        # Teardown closes a tunnel that is open (the user forgot it).
        reopened = run_playbook(repo_root, "playbooks/tunnel.yml", env, tunnel_vars)
        assert reopened.rc == 0, reopened.tail()
        assert requests.get(f"http://127.0.0.1:{tunnel_port}/api", timeout=10).ok
        # Through the tunnel to the new address, the same token still opens the notebook.
        status = requests.get(
            f"http://127.0.0.1:{tunnel_port}/api/status", headers=headers, timeout=10
        )
        assert status.status_code == 200, status.text

        down = run_playbook(repo_root, "playbooks/teardown.yml", env, extra, inventory)
        assert down.rc == 0, down.tail(80)
        cells = json.loads((project / "transfer_learning.ipynb").read_text())["cells"]
        # The edit saved through the API is there (the browser's saved cell too).
        assert any(c.get("id") == "edited-over-ssh" for c in cells), [c.get("id") for c in cells]
        assert not (ssh_config.parent / f"wyvern-{name}.ctl").exists()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{tunnel_port}/api", timeout=5)
        assert tagged_resources(ec2, name) == {
            "instances": [],
            "security_groups": [],
            "key_pairs": [],
        }
        config = ssh_config.read_text()
        assert f"Host {name}" not in config
        assert OTHER_ENTRY in config, "the other workbench's entry stays"
        # The receipt as teardown prints it.
        assert f"{instance['InstanceId']} (g4dn.xlarge) ran" in _flat(down.output), down.tail(80)
        assert "USD at 0.526 USD/hour" in _flat(down.output), down.tail(80)
        assert not known_hosts.exists()
        # Teardown brought S3's copy home, then left no bucket, role or instance profile.
        assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
        assert alias not in [r["RoleName"] for r in moto.client("iam").list_roles()["Roles"]]

        down_again = run_playbook(repo_root, "playbooks/teardown.yml", env, extra, inventory)
        assert down_again.rc == 0, down_again.tail(80)
        assert down_again.changed == 0, _changed_tasks(down_again.output)
        assert (run_dir / "metrics.json").exists()
        assert name not in {c.name for c in docker_client.containers.list(all=True)}
