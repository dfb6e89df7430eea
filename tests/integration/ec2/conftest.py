"""Helpers for the ec2_gpu_instance tests: run the role against moto, read what it left."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.sshd import SshServer, host_key_from_user_data, ssh_server

HERE = Path(__file__).resolve().parent
ROLE_PLAYBOOK = HERE / "role.yml"
# What the loopback "what is my address" service answers, as checkip.amazonaws.com does.
MY_ADDRESS = "203.0.113.7"
OWNER = "tester"


@dataclass
class PlaybookRun:
    rc: int
    result: dict[str, Any]
    stderr: str

    def results(self, task_name: str) -> list[dict[str, Any]]:
        found = []
        for play in self.result.get("plays", []):
            for task in play["tasks"]:
                if task["task"]["name"].endswith(task_name):
                    found.extend(task["hosts"].values())
        return found

    def failures(self) -> list[str]:
        msgs = []
        for play in self.result.get("plays", []):
            for task in play["tasks"]:
                for res in task["hosts"].values():
                    if res.get("failed") and not res.get("ignored"):
                        msgs.append(str(res.get("msg", "")))
        return msgs

    @property
    def changed(self) -> int:
        return sum(host["changed"] for host in self.result.get("stats", {}).values())

    @property
    def info(self) -> dict[str, Any]:
        return self.results("Show the instance record for the test to read")[0][
            "ec2_gpu_instance_info"
        ]

    def describe(self) -> str:
        return f"rc={self.rc}\nfailures={self.failures()}\nstderr={self.stderr[-3000:]}"


def role_env(base_env: dict[str, str], moto_env: dict[str, str], home: Path) -> dict[str, str]:
    """ansible-playbook env: moto's endpoint and fake credentials, a throwaway HOME.

    USER is the workbench owner, a name with no account: Ansible would expand its default
    temporary directories (~/.ansible/tmp) to ``~tester/...`` relative to the working
    directory, that is inside the checkout; both are pinned under the throwaway HOME.
    """
    (home / ".config").mkdir(parents=True, exist_ok=True)
    return {
        **base_env,
        **moto_env,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "USER": OWNER,
        # Never fall back to an instance role when a test has dropped the credentials.
        "AWS_EC2_METADATA_DISABLED": "true",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_LOCAL_TEMP": str(home / ".ansible-tmp"),
        "ANSIBLE_REMOTE_TEMP": str(home / ".ansible-remote-tmp"),
        # Nor bytecode of the collection's plugins next to their sources.
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def run_role(env: dict[str, str], *extra: str, **variables: Any) -> PlaybookRun:
    args = ["ansible-playbook", str(ROLE_PLAYBOOK)]
    for name, value in variables.items():
        args += ["-e", json.dumps({name: value})]
    args += list(extra)
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError:
        result = {"unparsed": proc.stdout[-3000:]}
    return PlaybookRun(proc.returncode, result, proc.stderr)


def tree_status(root: Path) -> set[str]:
    """Files in the checkout that git does not track, ignored ones included."""
    proc = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return {line for line in proc.stdout.splitlines() if line[:2] in ("??", "!!")}


def tagged_resources(ec2, name: str | None = None) -> dict[str, list[str]]:
    """Live instances, security groups and key pairs carrying workbench:name (= name if given)."""
    filters = [{"Name": "tag-key", "Values": ["workbench:name"]}]
    if name is not None:
        filters = [{"Name": "tag:workbench:name", "Values": [name]}]
    live = ["pending", "running", "shutting-down", "stopping", "stopped"]
    instances = [
        inst["InstanceId"]
        for res in ec2.describe_instances(
            Filters=[*filters, {"Name": "instance-state-name", "Values": live}]
        )["Reservations"]
        for inst in res["Instances"]
    ]
    groups = [g["GroupId"] for g in ec2.describe_security_groups(Filters=filters)["SecurityGroups"]]
    keys = [k["KeyName"] for k in ec2.describe_key_pairs(Filters=filters)["KeyPairs"]]
    return {"instances": instances, "security_groups": groups, "key_pairs": keys}


def nothing(resources: dict[str, list[str]]) -> bool:
    return not any(resources.values())


class _AddressHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"{MY_ADDRESS}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def my_address_url() -> Iterator[str]:
    """A loopback stand-in for checkip.amazonaws.com."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AddressHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture(scope="module")
def base_env(ansible_env: dict[str, str]) -> dict[str, str]:
    # Nothing from the developer's own AWS set-up may leak into a test.
    return {name: value for name, value in ansible_env.items() if not name.startswith("AWS_")}


def user_data(ec2, instance_id: str) -> str:
    """An instance's user data as EC2 stores it (and IMDS serves it to the instance)."""
    import base64

    attribute = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    value = attribute.get("UserData", {}).get("Value", "")
    return base64.b64decode(value).decode() if value else ""


@contextmanager
def booted_instance(
    ec2, instance_id: str, workdir: Path, authorized_key: Path
) -> Iterator[SshServer]:
    """A real sshd on 127.0.0.1 standing in for the instance (moto starts no machine).

    It "boots" as cloud-init would: with the host key the instance's user data carries.
    """
    with ssh_server(
        workdir, authorized_key, host_key_from_user_data(user_data(ec2, instance_id))
    ) as server:
        yield server
