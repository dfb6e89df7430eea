"""The durable_outputs role on this machine (loop mode): it installs the agent, which puts a
new checkpoint in (moto's) S3 with the instance profile's credentials from a fake IMDS;
a second run changes nothing; `absent` uploads what is left and stops the loop."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from .support import FakeImds

HERE = Path(__file__).resolve().parent


def _play(env: dict[str, str], variables: dict) -> dict:
    proc = subprocess.run(
        ["ansible-playbook", str(HERE / "role.yml"), "-e", json.dumps(variables)],
        env={**env, "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return json.loads(proc.stdout)


def _changed(result: dict) -> list[str]:
    return [
        t["task"]["name"].split(" : ", 1)[-1]
        for p in result["plays"]
        for t in p["tasks"]
        if any(h.get("changed") for h in t["hosts"].values())
    ]


@pytest.fixture
def imds():
    fake = FakeImds()
    yield fake
    fake.down()


def test_the_role_runs_the_agent_and_takes_it_away(
    tmp_path, moto_session, ansible_env, imds
) -> None:
    s3 = moto_session.client("s3")
    bucket = f"wyvern-role-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    home = tmp_path / "home"
    (home / "outputs/run-1").mkdir(parents=True)
    variables = {
        "durable_outputs_bucket": bucket,
        "durable_outputs_prefix": "workbench",
        "durable_outputs_region": "us-east-1",
        "durable_outputs_endpoint_url": moto_session.url,
        "durable_outputs_imds_url": imds.url,
        "durable_outputs_name": f"wb-{tmp_path.name}",
        "durable_outputs_notebook_home": str(home),
        "durable_outputs_mode": "loop",
        "durable_outputs_lib_dir": str(tmp_path / "lib"),
        "durable_outputs_config_dir": str(tmp_path / "etc"),
        "durable_outputs_unit_dir": str(tmp_path / "units"),
        "durable_outputs_python": "/usr/bin/python3",
    }
    env = {k: v for k, v in ansible_env.items() if not k.startswith("AWS_")}
    first = _play(env, variables)
    assert "Start or restart the agent's background loop" in _changed(first)
    pid = json.loads((home / "durable/loop.pid").read_text())["pid"]
    try:
        (home / "outputs/run-1/checkpoint.pt").write_bytes(b"weights")
        deadline = time.monotonic() + 15
        key = "workbench/outputs/run-1/checkpoint.pt"
        while key not in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]:
            assert time.monotonic() < deadline, (home / "durable/loop.log").read_text()
            time.sleep(0.2)
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"weights"
        assert stat_mode(tmp_path / "etc" / f"wb-{tmp_path.name}.json") == 0o600

        again = _play(env, variables)
        assert _changed(again) == []

        (home / "outputs/run-1/metrics.json").write_text("{}")
        os.utime(home / "outputs/run-1/metrics.json", (time.time() - 5, time.time() - 5))
        gone = _play(env, {**variables, "durable_outputs_entry": "absent"})
        assert "Stop the background loop" in _changed(gone)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert "workbench/outputs/run-1/metrics.json" in keys
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists():
            assert time.monotonic() < deadline, "the loop did not stop"
            time.sleep(0.1)
        assert not (tmp_path / "etc" / f"wb-{tmp_path.name}.json").exists()
    finally:
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, 15)


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777
