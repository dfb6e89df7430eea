"""The durable outputs agent against a fake IMDSv2 and moto's S3 on loopback.

SigV4 is compared with botocore's signer; uploads, the `.uploaded` mark and restore go to a
real (moto) S3 API; the watcher sees no notice, a notice, an expired token and a dead
endpoint; a notice makes a real process checkpoint and stop, and is recorded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from unittest import mock

import pytest

from .support import CREDS, FakeImds, botocore_authorization, load_agent

agent = load_agent()


@pytest.mark.parametrize(
    ("method", "key", "query"),
    [
        ("PUT", "wb/outputs/run-1/checkpoint.pt", {}),
        ("PUT", "wb/outputs/run 1/a+b=c~d(1).json", {}),
        ("GET", None, {"list-type": "2", "prefix": "wb/outputs/run-1/"}),
    ],
)
def test_sigv4_matches_botocore(method: str, key: str | None, query: dict[str, str]) -> None:
    s3 = agent.S3("my-bucket", "eu-west-1", None)
    path = s3._path(key) if key is not None else "/"
    body = b"payload" if method == "PUT" else b""
    payload_hash = agent.hashlib.sha256(body).hexdigest()
    when = dt.datetime(2026, 11, 27, 12, 0, 0, tzinfo=dt.UTC)
    headers = {"content-length": str(len(body))} if method == "PUT" else {}
    ours = agent.sign(method, s3.host, path, query, headers, payload_hash, "eu-west-1", CREDS, when)

    url = f"https://{s3.host}{path}"
    if query:
        url += "?" + agent.urllib.parse.urlencode(sorted(query.items()))
    theirs = botocore_authorization(method, url, body, headers, "s3", "eu-west-1", when)
    assert ours["Authorization"] == theirs


@pytest.fixture
def bucket(moto_session):
    s3 = moto_session.client("s3")
    name = f"wyvern-test-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    yield name
    for obj in s3.list_objects_v2(Bucket=name).get("Contents", []):
        s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)


def _config(tmp_path: Path, moto_session, bucket: str, imds_url: str, **extra) -> Path:
    config = {
        "outputs_dir": str(tmp_path / "outputs"),
        "state_dir": str(tmp_path / "state"),
        "bucket": bucket,
        "prefix": "workbench",
        "region": "us-east-1",
        "endpoint_url": moto_session.url,
        "imds_url": imds_url,
        "interval_seconds": 1,
        "settle_seconds": 0.2,
        "signal_command": ["kill", "-s", "{signal}", "{pid}"],
        **extra,
    }
    (tmp_path / "outputs").mkdir(exist_ok=True)
    path = tmp_path / "durable.json"
    path.write_text(json.dumps(config))
    return path


def _objects(moto_session, bucket: str) -> dict[str, bytes]:
    s3 = moto_session.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


@pytest.fixture
def imds():
    fake = FakeImds()
    yield fake
    with contextlib.suppress(OSError):
        fake.down()


def test_uploads_each_file_once_and_marks_the_run(tmp_path, moto_session, bucket, imds) -> None:
    config = agent.load_config(str(_config(tmp_path, moto_session, bucket, imds.url)))
    _, uploader, _ = agent.build(config)
    run = tmp_path / "outputs/run-1"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    (run / "metrics.json").write_text('{"best_val_acc": 0.9}')
    (run / "checkpoint.pt.tmp").write_text("half written")  # torch.save's temporary
    (run / ".fetched").write_text("")
    old = time.time() - 5
    for f in run.iterdir():
        os.utime(f, (old, old))

    assert sorted(uploader.sync()) == ["run-1/checkpoint.pt", "run-1/metrics.json"]
    stored = _objects(moto_session, bucket)
    assert stored == {
        "workbench/outputs/run-1/checkpoint.pt": (run / "checkpoint.pt").read_bytes(),
        "workbench/outputs/run-1/metrics.json": b'{"best_val_acc": 0.9}',
    }
    marker = run / ".uploaded"
    assert marker.stat().st_mtime > old
    assert uploader.sync() == []  # nothing new: nothing sent

    (run / "metrics.json").write_text('{"best_val_acc": 0.95}')
    os.utime(run / "metrics.json", (old + 1, old + 1))
    assert uploader.sync() == ["run-1/metrics.json"]
    assert _objects(moto_session, bucket)["workbench/outputs/run-1/metrics.json"].endswith(b"95}")


def test_a_file_still_being_written_waits_and_the_run_is_not_marked(
    tmp_path, moto_session, bucket, imds
) -> None:
    config = agent.load_config(
        str(_config(tmp_path, moto_session, bucket, imds.url, settle_seconds=30))
    )
    _, uploader, _ = agent.build(config)
    run = tmp_path / "outputs/run-1"
    run.mkdir()
    (run / "log.txt").write_text("growing")
    assert uploader.sync() == []
    assert not (run / ".uploaded").exists()


def test_credentials_come_from_the_instance_profile_through_imdsv2(imds) -> None:
    creds = agent.Credentials(agent.Imds(imds.url)).get()
    assert creds == {
        "access_key": "ASIAFAKEKEY",
        "secret_key": "fake-secret",
        "token": "fake-session-token",
    }


def test_no_notice_means_no_action(tmp_path, moto_session, bucket, imds) -> None:
    config = agent.load_config(str(_config(tmp_path, moto_session, bucket, imds.url)))
    _, _, watcher = agent.build(config)
    assert watcher.poll() is None
    assert imds.token_puts == 1 and imds.unauthorized == 0


def test_an_expired_token_is_renewed_before_use(tmp_path, moto_session, bucket, imds) -> None:
    client = agent.Imds(imds.url, ttl=2)
    assert client.get("/latest/meta-data/spot/instance-action") is None
    time.sleep(2.1)
    assert client.get("/latest/meta-data/spot/instance-action") is None
    assert imds.token_puts == 2 and imds.unauthorized == 0  # renewed before it ran out
    imds.forget_tokens()  # the service restarted: the token is refused once, then renewed
    imds.notice()
    assert json.loads(client.get("/latest/meta-data/spot/instance-action"))["action"] == "terminate"
    assert imds.unauthorized == 1 and imds.token_puts == 3


def test_endpoint_down_is_reported_and_uploads_go_on(tmp_path, moto_session, bucket, imds) -> None:
    config = agent.load_config(str(_config(tmp_path, moto_session, bucket, imds.url)))
    built = agent.build(config)
    imds.down()
    run = tmp_path / "outputs/run-1"
    run.mkdir()
    (run / "metrics.json").write_text("{}")
    os.utime(run / "metrics.json", (time.time() - 5, time.time() - 5))
    # Static credentials stand for ones read before the endpoint went away.
    built[1].s3.credentials = mock.Mock(get=mock.Mock(return_value=CREDS))
    result = agent.once(*built)
    assert result["notice"] is None
    assert any(e.startswith("watcher: ") for e in result["errors"]), result
    assert result["uploaded"] == ["run-1/metrics.json"]


TRAINING = textwrap.dedent(
    """
    import json, os, signal, sys, time
    run = sys.argv[1]
    def write(state):
        tmp = os.path.join(run, ".progress.tmp")
        with open(tmp, "w") as f:
            json.dump({"state": state, "pid": os.getpid()}, f)
        os.replace(tmp, os.path.join(run, "progress.json"))
    def save():
        with open(os.path.join(run, "checkpoint.pt.tmp"), "w") as f:
            f.write("step %d" % time.time_ns())
        os.replace(os.path.join(run, "checkpoint.pt.tmp"), os.path.join(run, "checkpoint.pt"))
    def on_term(*_):
        save(); write("stopped"); sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGUSR1, lambda *_: save())
    write("running")
    while True:
        time.sleep(0.05)
    """
)


def _training(run: Path) -> subprocess.Popen[bytes]:
    run.mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-c", TRAINING, str(run)])
    deadline = time.monotonic() + 10
    while not (run / "progress.json").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return proc


def _agent_with_credentials(tmp_path, moto_session, bucket, imds):
    """The agent built from its config, its S3 client holding the instance profile's keys."""
    config = agent.load_config(str(_config(tmp_path, moto_session, bucket, imds.url)))
    built = agent.build(config)
    built[1].s3.credentials = mock.Mock(get=mock.Mock(return_value=CREDS))
    return built


def test_a_reclaim_notice_checkpoints_stops_records_and_uploads(
    tmp_path, moto_session, bucket, imds
) -> None:
    built = _agent_with_credentials(tmp_path, moto_session, bucket, imds)
    run = tmp_path / "outputs/run-1"
    proc = _training(run)
    try:
        assert agent.once(*built)["notice"] is None
        assert proc.poll() is None
        imds.notice()
        result = agent.once(*built)
        assert result["notice"]["kind"] == "instance-action"
        assert proc.wait(timeout=10) == 0  # it stopped, cleanly
        record = json.loads((run / "interruption.json").read_text())
        assert record["signal"] == "SIGTERM" and record["checkpoint_saved"] is True
        assert record["notice"]["action"] == "terminate"
        time.sleep(0.3)  # settle, then the next pass uploads the checkpoint and the record
        agent.once(*built)
        stored = _objects(moto_session, bucket)
        assert stored["workbench/outputs/run-1/checkpoint.pt"].startswith(b"step ")
        assert b"SIGTERM" in stored["workbench/outputs/run-1/interruption.json"]
        # The same notice again does not signal again.
        assert agent.once(*built)["notice"] is None
    finally:
        proc.kill()


def test_a_rebalance_recommendation_checkpoints_and_training_goes_on(
    tmp_path, moto_session, bucket, imds
) -> None:
    built = _agent_with_credentials(tmp_path, moto_session, bucket, imds)
    run = tmp_path / "outputs/run-1"
    proc = _training(run)
    try:
        imds.rebalance()
        result = agent.once(*built)
        assert result["notice"]["kind"] == "rebalance"
        assert (run / "checkpoint.pt").exists()
        assert proc.poll() is None  # still training
        assert json.loads((run / "interruption.json").read_text())["signal"] == "SIGUSR1"
    finally:
        proc.kill()


def test_restore_brings_a_run_back_from_s3(tmp_path, moto_session, bucket, imds) -> None:
    s3 = moto_session.client("s3")
    s3.put_object(Bucket=bucket, Key="workbench/outputs/run-1/checkpoint.pt", Body=b"ckpt")
    s3.put_object(Bucket=bucket, Key="workbench/outputs/run-2/checkpoint.pt", Body=b"other")
    config = agent.load_config(str(_config(tmp_path, moto_session, bucket, imds.url)))
    assert agent.restore(config, "run-1") == ["run-1/checkpoint.pt"]
    assert (tmp_path / "outputs/run-1/checkpoint.pt").read_bytes() == b"ckpt"
    assert not (tmp_path / "outputs/run-2").exists()
    # Restored files are known to be in S3: the next pass sends nothing.
    _, uploader, _ = agent.build(config)
    assert uploader.sync() == []


def test_upload_latency_of_the_loop(tmp_path, moto_session, bucket, imds) -> None:
    """A new checkpoint is in S3 within interval + settle + the PUT: measured here."""
    path = _config(tmp_path, moto_session, bucket, imds.url, interval_seconds=2, settle_seconds=0.5)
    loop = subprocess.Popen([sys.executable, str(agent.__file__), "--config", str(path), "--loop"])
    s3 = moto_session.client("s3")
    latencies = []
    try:
        (tmp_path / "outputs/run-1").mkdir()
        for i in range(5):
            name = f"run-1/checkpoint-{i}.pt"
            (tmp_path / "outputs" / name).write_bytes(os.urandom(1 << 20))
            written = time.monotonic()
            while True:
                keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
                if f"workbench/outputs/{name}" in keys:
                    break
                assert time.monotonic() - written < 15, "not uploaded within 15 s"
                time.sleep(0.05)
            latencies.append(time.monotonic() - written)
            time.sleep(0.7)  # land at another point of the loop's cycle
    finally:
        loop.terminate()
        loop.wait(timeout=10)
    print(
        f"upload latency s: median {statistics.median(latencies):.2f} max {max(latencies):.2f} {latencies}"
    )
    assert max(latencies) < 2 + 0.5 + 2.5


def test_the_loop_ends_when_its_workbench_is_gone(tmp_path, moto_session, bucket, imds) -> None:
    path = _config(tmp_path, moto_session, bucket, imds.url)
    loop = subprocess.Popen([sys.executable, str(agent.__file__), "--config", str(path), "--loop"])
    try:
        time.sleep(1.5)
        assert loop.poll() is None
        path.unlink()  # a workbench removed without teardown
        assert loop.wait(timeout=10) == 0
    finally:
        if loop.poll() is None:
            loop.kill()
