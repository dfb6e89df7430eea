"""Every preflight failure stops with one message naming the variable, and creates nothing.

The cases only read from moto and stop early, so they run a few at a time, each with its
own workbench_name and HOME; each test then checks its own case. Their common variables
(GOOD) are the ones the lifecycle test provisions with successfully.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.moto import free_port

from .conftest import PlaybookRun, nothing, role_env, run_role, tagged_resources, tree_status


@dataclass
class Case:
    variables: dict[str, Any]
    expected: list[str]
    # Environment names to drop (credentials) for this case.
    drop_env: list[str] = field(default_factory=list)


GOOD = {"ec2_gpu_instance_ssh_cidr": "203.0.113.7/32", "ec2_gpu_instance_wait_for_ssh": False}
NO_KEYS = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]

CASES: dict[str, Case] = {
    "no-credentials": Case(
        {}, ["AWS credentials do not work", "ec2_gpu_instance_profile"], drop_env=NO_KEYS
    ),
    "unknown-region": Case(
        {"ec2_gpu_instance_region": "xx-nowhere-9"},
        ["ec2_gpu_instance_region 'xx-nowhere-9' is not a region enabled", "us-east-1"],
    ),
    # A typo in the region is reported as such, before the credentials are asked for (on
    # AWS the bad region's endpoint would make good credentials look broken).
    "malformed-region-without-credentials": Case(
        {"ec2_gpu_instance_region": "us-east1"},
        ["ec2_gpu_instance_region 'us-east1' is not a region name"],
        drop_env=NO_KEYS,
    ),
    "root-volume-zero": Case(
        {"ec2_gpu_instance_root_volume_size": 0},
        ["ec2_gpu_instance_root_volume_size 0 is outside gp3's range of 1..16384 GiB"],
    ),
    "root-volume-above-gp3": Case(
        {"ec2_gpu_instance_root_volume_size": 100000},
        ["ec2_gpu_instance_root_volume_size 100000 is outside gp3's range"],
    ),
    # moto's AMIs have a 15 GiB root snapshot.
    "root-volume-below-snapshot": Case(
        {"ec2_gpu_instance_root_volume_size": 10},
        [
            "ec2_gpu_instance_root_volume_size 10 GiB is smaller than the root snapshot of AMI",
            "(15 GiB); set it to 15 or more",
        ],
    ),
    "retired-type": Case(
        {"ec2_gpu_instance_type": "p2.xlarge"},
        ["ec2_gpu_instance_type 'p2.xlarge' is not an EC2 instance type"],
    ),
    "type-not-offered": Case(
        {"ec2_gpu_instance_type": "p5e.48xlarge"},
        ["ec2_gpu_instance_type 'p5e.48xlarge' is not offered in region us-east-1"],
    ),
    "ami-pattern-matches-nothing": Case(
        {"ec2_gpu_instance_ami_name": "No Such Image *"},
        ["No available AMI owned by 'amazon' matches ec2_gpu_instance_ami_name 'No Such Image *'"],
    ),
    "ami-id-unknown": Case(
        {"ec2_gpu_instance_ami_id": "ami-0123456789abcdef0"},
        ["ec2_gpu_instance_ami_id 'ami-0123456789abcdef0' does not resolve"],
    ),
    "ami-id-malformed": Case(
        {"ec2_gpu_instance_ami_id": "ami-not-hex"},
        ["ec2_gpu_instance_ami_id 'ami-not-hex' does not resolve"],
    ),
    "world-ssh": Case(
        {"ec2_gpu_instance_ssh_cidr": "0.0.0.0/0"},
        ["opens SSH to the whole internet", "ec2_gpu_instance_allow_world_ssh"],
    ),
    "half-the-internet-ssh": Case(
        {"ec2_gpu_instance_ssh_cidr": "0.0.0.0/1"},
        ["0.0.0.0/1 opens SSH to a network wider than /16", "ec2_gpu_instance_allow_world_ssh"],
    ),
    "wide-ipv6-ssh": Case(
        {"ec2_gpu_instance_ssh_cidr": "2001:db8::/32"},
        ["2001:db8::/32 opens SSH to a network wider than /48", "limit for IPv6 is /48"],
    ),
    "ssh-address-service-down": Case(
        {"ec2_gpu_instance_ssh_cidr": "", "ec2_gpu_instance_ssh_cidr_url": "CLOSED_PORT_URL"},
        ["Could not detect this machine's address", "set ec2_gpu_instance_ssh_cidr"],
    ),
    "key-path-unusable": Case(
        {"ec2_gpu_instance_key_path": "HOME/a-file/id_ed25519"},
        ["ec2_gpu_instance_key_path", "cannot hold the SSH key"],
    ),
    # The idle action decides what `poweroff` inside the instance does, set at launch.
    "idle-action-unknown": Case(
        {"workbench_idle_action": "destroy"},
        ["ec2_gpu_instance_shutdown_behavior must be one of: stop, terminate, got: destroy"],
    ),
    # Terminate must be able to stop instead while outputs are not fetched: that takes the
    # durable outputs' instance profile.
    "terminate-without-durable-outputs": Case(
        {"workbench_idle_action": "terminate", "ec2_gpu_instance_durable_outputs": False},
        [
            "workbench_idle_action=terminate (ec2_gpu_instance_shutdown_behavior=terminate) needs",
            "ec2_gpu_instance_durable_outputs=true",
            "autostop_terminate_unfetched=true",
        ],
    ),
    "subnet-zone-without-the-type": Case(
        {"ec2_gpu_instance_subnet_id": "SUBNET_IN_US_EAST_1E"},
        ["is not in a zone that offers g4dn.xlarge", "set ec2_gpu_instance_subnet_id"],
    ),
}


@dataclass
class Outcome:
    run: PlaybookRun
    left: dict[str, list[str]]


def _resolve(value: Any, home: Path, placeholders: dict[str, str]) -> Any:
    if isinstance(value, str):
        for marker, real in {**placeholders, "HOME": str(home)}.items():
            value = value.replace(marker, real)
    return value


@pytest.fixture(scope="module")
def tree_before(repo_root: Path) -> set[str]:
    return tree_status(repo_root)


@pytest.fixture(scope="module")
def outcomes(moto_session, base_env, tmp_path_factory, tree_before) -> dict[str, Outcome]:
    moto_session.reset()
    ec2 = moto_session.client("ec2")
    subnet_1e = ec2.describe_subnets(
        Filters=[
            {"Name": "availability-zone", "Values": ["us-east-1e"]},
            {"Name": "default-for-az", "Values": ["true"]},
        ]
    )["Subnets"][0]["SubnetId"]
    placeholders = {
        "CLOSED_PORT_URL": f"http://127.0.0.1:{free_port()}/",
        "SUBNET_IN_US_EAST_1E": subnet_1e,
    }

    def run(name: str) -> tuple[str, PlaybookRun]:
        case = CASES[name]
        home = tmp_path_factory.mktemp(name)
        (home / "a-file").write_text("a file where a directory should be\n")
        env = role_env(base_env, moto_session.env, home)
        for var in case.drop_env:
            env.pop(var, None)
        variables = {
            **GOOD,
            "workbench_name": name,
            **{k: _resolve(v, home, placeholders) for k, v in case.variables.items()},
        }
        return name, run_role(env, **variables)

    # pytest makes its base temporary directory on first use, and not thread-safely: three
    # threads' first mktemp calls race on it (FileExistsError, or "not a normalized path").
    tmp_path_factory.getbasetemp()
    # Three at a time: they mostly wait on ansible's module start-up and on moto.
    with ThreadPoolExecutor(max_workers=3) as pool:
        runs = dict(pool.map(run, CASES))
    return {name: Outcome(r, tagged_resources(ec2, name)) for name, r in runs.items()} | {
        "*": Outcome(runs["no-credentials"], tagged_resources(ec2))
    }


@pytest.mark.parametrize("name", list(CASES))
def test_preflight_failure_names_the_variable_and_creates_nothing(
    outcomes: dict[str, Outcome], name: str
) -> None:
    outcome = outcomes[name]
    assert outcome.run.rc != 0, outcome.run.describe()
    failures = outcome.run.failures()
    # The message that stopped the run (a rescued module error may come before it).
    message = " ".join(failures[-1].split())
    for expected in CASES[name].expected:
        assert expected in message, message
    assert nothing(outcome.left), outcome.left
    assert nothing(outcomes["*"].left), outcomes["*"].left


@pytest.mark.parametrize("name", ["ami-id-unknown", "ami-id-malformed"])
def test_a_bad_ami_id_fails_with_one_line_and_no_traceback(
    outcomes: dict[str, Outcome], name: str
) -> None:
    run = outcomes[name].run
    assert len(run.failures()) == 1, run.failures()
    assert "Traceback" not in json.dumps(run.result) + run.stderr


def test_preflight_accepts_a_slash_16(moto, base_env, tmp_path: Path) -> None:
    # The limit itself is allowed: the check refuses only wider networks.
    env = role_env(base_env, moto.env, tmp_path)
    run = run_role(
        env,
        **{**GOOD, "ec2_gpu_instance_ssh_cidr": "198.51.100.0/16"},
        **{"ec2_gpu_instance_type": "p2.xlarge"},
    )
    # It gets past the CIDR check and stops later, at the (retired) instance type.
    assert "is not an EC2 instance type" in run.failures()[-1], run.describe()


def test_runs_write_nothing_into_the_checkout(
    outcomes: dict[str, Outcome], tree_before: set[str], repo_root: Path
) -> None:
    # Every case above ran ansible-playbook with USER set to an owner that is no account.
    assert tree_status(repo_root) - tree_before == set()
