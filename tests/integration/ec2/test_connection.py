"""The connection settings of provisioning reach every later playbook through the inventory.

A key path other than the default, chosen at provisioning, used to break every later
playbook: the dynamic inventory re-derived the default path. Now the role records how to
connect in the workbench's connection file and the inventory reads it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from .conftest import MY_ADDRESS, OWNER, booted_instance, role_env, run_role

WORKBENCH = "moved"
HOST = f"wyvern-{WORKBENCH}-{OWNER}"


def _unwrap(value: Any) -> Any:
    # ansible-inventory marks untrusted strings as {"__ansible_unsafe": "..."}.
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def test_a_key_path_chosen_at_provisioning_is_used_by_later_playbooks(
    moto, base_env, tmp_path: Path, repo_root: Path
) -> None:
    home = tmp_path / "home"
    env = role_env(base_env, moto.env, home)
    key = tmp_path / "elsewhere" / "keys" / "id_ed25519"
    up = run_role(
        env,
        workbench_name=WORKBENCH,
        ec2_gpu_instance_key_path=str(key),
        ec2_gpu_instance_ssh_cidr=MY_ADDRESS,
        ec2_gpu_instance_wait_for_ssh=False,
    )
    assert up.rc == 0, up.describe()
    assert key.exists() and not (home / ".config/wyvern" / WORKBENCH / "id_ed25519").exists()

    inventory = repo_root / "inventory/aws_ec2.yml"
    proc = subprocess.run(
        [
            "ansible-inventory",
            "-i",
            str(inventory),
            "--host",
            HOST,
            "-e",
            f"workbench_name={WORKBENCH}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    host = _unwrap(json.loads(proc.stdout))
    assert host["ansible_ssh_private_key_file"] == str(key)
    known_hosts = key.parent / "known_hosts"
    assert f"UserKnownHostsFile={known_hosts}" in host["ansible_ssh_common_args"]
    assert "StrictHostKeyChecking=yes" in host["ansible_ssh_common_args"]
    assert host["ec2_gpu_instance_info"]["known_hosts"] == str(known_hosts)
    # The SSH alias uses the same settings.
    assert f"IdentityFile {key}\n" in (home / ".ssh/config").read_text()

    # And a later command through the inventory really logs in with that key, checking the
    # host key strictly: an sshd on loopback stands in for the instance, booted from its
    # user data and accepting only the public half of the moved key.
    instance_id = host["ec2_gpu_instance_info"]["instance_id"]
    with booted_instance(
        moto.client("ec2"), instance_id, tmp_path / "sshd", Path(f"{key}.pub")
    ) as sshd:
        ping = subprocess.run(
            [
                "ansible",
                "-i",
                str(inventory),
                "workbench",
                "-m",
                "ansible.builtin.ping",
                "-e",
                f"workbench_name={WORKBENCH}",
                "-e",
                f"ansible_host=127.0.0.1 ansible_port={sshd.port} ansible_user={sshd.user}",
            ],
            env={**env, "ANSIBLE_STDOUT_CALLBACK": "default"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert f"{HOST} | SUCCESS" in ping.stdout and "pong" in ping.stdout, ping.stdout

    # Teardown forgets the connection with the instance.
    down = run_role(
        env,
        workbench_name=WORKBENCH,
        ec2_gpu_instance_key_path=str(key),
        ec2_gpu_instance_state="absent",
    )
    assert down.rc == 0, down.describe()
    assert not (home / ".config/wyvern" / WORKBENCH / "connection.json").exists()
