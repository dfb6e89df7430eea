"""Stop instead of terminate: the instance stops itself through EC2's API (moto on loopback).

The durable outputs agent's `--stop-instance` asks a fake IMDSv2 for the instance id, its
region and the instance profile's credentials, and signs StopInstances by hand; the hard
limit of an instance launched to terminate, holding a run that was never fetched, runs it
instead of powering off. EC2 (moto) then reports the instance stopped, not terminated, and
the run is still on the disk.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .support import AGENT, CREDS, ROOT, FakeImds, botocore_authorization, load_agent

agent = load_agent()
HARDSTOP = ROOT / "roles/autostop/files/wyvern_hardstop.py"


hard = load_agent(HARDSTOP, "wyvern_hardstop_stop_test")


def test_the_stop_request_is_signed_as_botocore_signs_it() -> None:
    body = b"Action=StopInstances&InstanceId.1=i-0123456789abcdef0&Version=2016-11-15"
    headers = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}
    when = dt.datetime(2026, 11, 28, 2, 0, 0, tzinfo=dt.UTC)
    host = "ec2.eu-west-1.amazonaws.com"
    digest = agent.hashlib.sha256(body).hexdigest()
    ours = agent.sign(
        "POST", host, "/", {}, headers, digest, "eu-west-1", CREDS, when, service="ec2"
    )
    theirs = botocore_authorization(
        "POST",
        f"https://{host}/",
        body,
        {**headers, "x-amz-content-sha256": digest},
        "ec2",
        "eu-west-1",
        when,
    )
    assert ours["Authorization"] == theirs


@pytest.fixture
def instance(moto_session):
    ec2 = moto_session.client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    (made,) = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro")[
        "Instances"
    ]
    yield made["InstanceId"]
    ec2.terminate_instances(InstanceIds=[made["InstanceId"]])


@pytest.fixture
def imds(instance: str):
    fake = FakeImds()
    fake.paths["/latest/meta-data/instance-id"] = instance
    fake.paths["/latest/meta-data/placement/region"] = "us-east-1"
    yield fake
    fake.down()


def _durable_config(tmp_path: Path, moto_session, imds: FakeImds) -> Path:
    path = tmp_path / "durable.json"
    path.write_text(
        json.dumps(
            {
                "outputs_dir": str(tmp_path / "home" / "outputs"),
                "state_dir": str(tmp_path / "durable"),
                "bucket": "unused-bucket",
                "prefix": "workbench",
                "region": "us-east-1",
                "endpoint_url": moto_session.url,
                "ec2_endpoint_url": moto_session.url,
                "imds_url": imds.url,
            }
        )
    )
    return path


def _state(moto_session, instance: str) -> str:
    ec2 = moto_session.client("ec2")
    (reservation,) = ec2.describe_instances(InstanceIds=[instance])["Reservations"]
    return reservation["Instances"][0]["State"]["Name"]


def _stop_command(config: Path) -> list[str]:
    return [sys.executable, str(AGENT), "--config", str(config), "--stop-instance"]


def _stop(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        _stop_command(config), capture_output=True, text=True, timeout=60, check=False
    )


def test_the_agent_stops_its_own_instance_through_ec2(tmp_path, moto_session, imds, instance):
    done = _stop(_durable_config(tmp_path, moto_session, imds))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["instance"] == instance
    assert _state(moto_session, instance) in ("stopping", "stopped")
    assert "fake-secret" not in done.stdout + done.stderr


def test_ec2_refusing_is_reported_with_its_reason(tmp_path, moto_session, imds) -> None:
    imds.paths["/latest/meta-data/instance-id"] = "i-0000000000000dead"
    done = _stop(_durable_config(tmp_path, moto_session, imds))
    assert done.returncode == 1
    assert "could not stop the instance" in done.stderr
    assert "InvalidInstanceID.NotFound" in done.stderr


def test_the_hard_limit_stops_instead_of_terminating_an_unfetched_run(
    tmp_path, moto_session, imds, instance
) -> None:
    home = tmp_path / "home"
    run = home / "outputs" / "run-1"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text('{"val_acc": 0.93}')
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "stat").write_text(f"cpu 1 2 3\nbtime {int(time.time()) - 13 * 3600}\n")
    powered_off = tmp_path / "powered-off"
    config = dict(
        hard.DEFAULTS,
        target="aws",
        notebook_home=str(home),
        action="terminate",
        poweroff_behavior="terminate",
        max_seconds=12 * 3600.0,
        proc_root=str(proc),
        poweroff_command=["touch", str(powered_off)],
        stop_command=_stop_command(_durable_config(tmp_path, moto_session, imds)),
        state_dir=str(home / "autostop"),
    )
    result = hard.hard_tick(config)
    assert result["verdict"] == "act", result
    assert "stops instead" in result["reason"] and "run-1" in result["reason"]
    assert _state(moto_session, instance) in ("stopping", "stopped")
    assert not powered_off.exists()  # powering off would have terminated it
    assert (run / "metrics.json").read_text() == '{"val_acc": 0.93}'
    log = (home / "autostop" / "agent.log").read_text()
    assert "stopped the instance through EC2's API" in log

    # Where EC2 refuses, the instance keeps running and the log says why.
    imds.paths["/latest/meta-data/instance-id"] = "i-0000000000000dead"
    with pytest.raises(OSError, match=r"InvalidInstanceID\.NotFound.*keeps running"):
        hard.hard_tick(config)
    assert not powered_off.exists()
