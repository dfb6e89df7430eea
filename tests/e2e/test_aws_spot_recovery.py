"""A spot reclaim mid-run through the whole path, on moto with a stand-in instance.

site.yml launches a spot workbench (moto's EC2, the stand-in sshd at the instance's
address, the fake IMDSv2 giving the durable outputs agent its credentials). run.yml
trains; the spot interruption notice comes; the agent on the instance makes the training
checkpoint and puts it in (moto's) S3. EC2 reclaims the instance: it is terminated and its
disk is gone. run.yml again brings S3's copy home, launches a replacement instance,
continues the run from its checkpoint and ends with the same learning curve as a run
nobody interrupted, the interruption in the run's record. Teardown leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

from tests.e2e.test_aws_target import (  # noqa: F401  (fixtures)
    _changed_tasks,
    _flat,
    aws_env,
    aws_home,
    instance_key,
    name,
    tagged_resources,
)
from tests.integration.durable.support import FakeImds

# The interrupted run's settings (the notice lands once epoch 2 is under way) and its
# learning curve, as in the local test.
from tests.integration.test_run_resume import RUN, _curve
from tests.support.cleanup import remove_workbench
from tests.support.outputs import host_notebook_home, run_outputs_dir
from tests.support.playbook import PlaybookRun, run_playbook, run_playbook_until_training
from tests.support.ports import reserved_port
from tests.support.sshd import StandInInstance

INVENTORY = ["inventory/aws_ec2.yml"]
NOTICE = "/latest/meta-data/spot/instance-action"


def _s3_keys(s3, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def _run_until_the_notice(
    repo_root: Path, env: dict, extra: dict, imds: FakeImds, log: Path
) -> tuple[PlaybookRun, str]:
    """run.yml in the background; the spot notice once epoch 2 is under way on the host."""
    run, run_dir = run_playbook_until_training(
        repo_root,
        ["playbooks/run.yml", "-i", INVENTORY[0], "-e", json.dumps(extra)],
        env,
        host_notebook_home(extra["workbench_name"]) / "outputs",
        log,
        lambda _record: imds.notice("terminate"),
    )
    return run, run_dir.name


def _reclaim(ec2, docker_client, imds: FakeImds, workbench: str, instance_id: str) -> None:
    """EC2 reclaims the spot instance: terminated, its disk and its processes gone."""
    imds.paths.pop(NOTICE, None)  # the replacement's metadata service has no notice
    ec2.terminate_instances(InstanceIds=[instance_id])
    # The agents that ran on the lost instance end with it (here they run on this machine).
    config = Path("/etc/wyvern/durable") / f"{workbench}.json"
    agent = "/usr/local/lib/wyvern/wyvern_durable.py"
    subprocess.run(
        ["python3", agent, "--config", str(config), "--stop-loop"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    config.unlink()
    remove_workbench(docker_client, workbench)
    shutil.rmtree(host_notebook_home(workbench))


def test_a_reclaimed_spot_run_resumes_on_a_replacement(
    repo_root,
    moto,
    docker_client,
    notebook_image: str,  # built once per content, under the image lock, before any play
    name: str,  # noqa: F811
    instance_key,  # noqa: F811
    aws_env,  # noqa: F811
    tmp_path,
) -> None:
    env = aws_env
    outputs = tmp_path / "outputs"
    ec2, s3 = moto.client("ec2"), moto.client("s3")
    alias = f"wyvern-{name}-{env.get('USER') or 'workbench'}"
    stand_in = StandInInstance(ec2, name, tmp_path / "sshd", instance_key.with_suffix(".pub"))
    imds = FakeImds()
    with contextlib.ExitStack() as stack:
        stack.callback(imds.down)
        notebook_port = stack.enter_context(reserved_port())
        stack.enter_context(stand_in)
        extra = {
            "workbench_target": "aws",
            "workbench_name": name,
            "workbench_outputs_dir": str(outputs),
            "workbench_idle_action": "terminate",
            "ec2_gpu_instance_market": "spot",
            "ec2_gpu_instance_ssh_cidr": "203.0.113.7/32",
            "ec2_gpu_instance_ssh_user": getpass.getuser(),
            "notebook_port": notebook_port,
            "ec2_gpu_instance_wait_timeout": 60,
            "workbench_notebooks_dir": str(tmp_path / "notebooks"),
            "durable_outputs_imds_url": imds.url,
        }
        site = run_playbook(repo_root, "site.yml", env, extra)
        assert stand_in.error is None, stand_in.error
        assert site.rc == 0, site.tail(80)
        (first,) = tagged_resources(ec2, name)["instances"]

        stopped, run_id = _run_until_the_notice(
            repo_root, env, {**extra, **RUN}, imds, tmp_path / "interrupted.log"
        )
        assert stopped.rc != 0, stopped.tail(60)
        # The notice lands mid-epoch or while an epoch is evaluated (its checkpoint is saved).
        assert re.search(
            r"The training was stopped (in epoch \d+ at step \d+|after epoch \d+) \(by a signal",
            _flat(stopped.output),
        ), stopped.tail(60)
        (bucket,) = [
            b["Name"] for b in s3.list_buckets()["Buckets"] if b["Name"].startswith("wyvern-")
        ]
        # The agent put the checkpoint and the interruption's record in S3 before the end.
        deadline = time.monotonic() + 60
        wanted = {f"{name}/outputs/{run_id}/{f}" for f in ("checkpoint.pt", "interruption.json")}
        while not wanted <= set(_s3_keys(s3, bucket)):
            assert time.monotonic() < deadline, _s3_keys(s3, bucket)
            time.sleep(0.5)
        _reclaim(ec2, docker_client, imds, name, first)
        # EC2 cannot fill a spot request in the first instance's zone any more: the
        # replacement goes to the next zone that offers the type.
        (lost,) = [
            i
            for r in ec2.describe_instances(InstanceIds=[first])["Reservations"]
            for i in r["Instances"]
        ]
        first_zone = lost["Placement"]["AvailabilityZone"]
        stack.callback(moto.set_faults)
        moto.set_faults(spot_refused_zones={first_zone: "SpotMaxPriceTooLow"})

        resumed = run_playbook(repo_root, "playbooks/run.yml", env, {**extra, **RUN}, INVENTORY)
        assert stand_in.error is None, stand_in.error
        assert resumed.rc == 0, resumed.tail(100)
        text = _flat(resumed.output)
        assert f"S3 held the interrupted run(s) {run_id}" in text, resumed.tail(100)
        assert "launching a replacement instance" in text
        # The replacement's own durable outputs agent restored the checkpoint from S3 (the
        # control node sent nothing).
        assert (
            f"Run {run_id} was interrupted before its end: it continues from its checkpoint "
            "(restored from S3 on " in text
        ), resumed.tail(100)
        assert "its outputs go from this machine instead" not in text
        (second,) = tagged_resources(ec2, name)["instances"]
        assert second != first
        (replacement,) = [
            i
            for r in ec2.describe_instances(InstanceIds=[second])["Reservations"]
            for i in r["Instances"]
        ]
        assert replacement["Placement"]["AvailabilityZone"] != first_zone
        assert len(stand_in.boots) == 2, stand_in.boots
        run_dir = run_outputs_dir(outputs, alias, name, run_id)
        assert json.loads((run_dir / "run.json").read_text())["parameters"]["resume"] is True
        interruption = json.loads((run_dir / "interruption.json").read_text())
        assert interruption["checkpoint_saved"] is True, interruption
        curve = _curve(run_dir)
        assert len(curve) == 3

        # The same run nobody interrupted, on the replacement: the same learning curve.
        forced = run_playbook(
            repo_root, "playbooks/run.yml", env, {**extra, **RUN, "run_force": True}, INVENTORY
        )
        assert forced.rc == 0, forced.tail(80)
        assert "was interrupted before its end" not in forced.output
        assert _curve(run_dir) == curve

        down = run_playbook(repo_root, "playbooks/teardown.yml", env, extra, INVENTORY)
        assert down.rc == 0, down.tail(80)
        assert tagged_resources(ec2, name) == {
            "instances": [],
            "security_groups": [],
            "key_pairs": [],
        }
        assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
        assert (run_dir / "metrics.json").exists()
