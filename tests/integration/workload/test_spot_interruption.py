"""A spot reclaim through the whole path, short of Ansible: the notice (fake IMDSv2) ->
the durable outputs agent SIGTERMs the real training -> mid-epoch checkpoint -> uploaded to
(moto's) S3 -> the instance's disk is gone -> a replacement restores the run from S3 ->
`--resume` -> the same learning curve and metrics as a run nobody interrupted."""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from pathlib import Path

import pytest

from tests.integration.durable.support import FakeImds, load_agent
from tests.integration.workload.conftest import RunCli, learning_curve, metrics
from tests.integration.workload.test_signals import (  # noqa: F401  (reference: a fixture)
    STEPS,
    _resume,
    _train,
    reference,
)

agent = load_agent()
RUN = "spot"


@pytest.fixture
def bucket(moto_session):
    s3 = moto_session.client("s3")
    name = f"wyvern-spot-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    return name


def _config(root: Path, moto_session, bucket: str, imds: FakeImds) -> dict:
    (root / "outputs").mkdir(parents=True)
    config = {
        "outputs_dir": str(root / "outputs"),
        "state_dir": str(root / "state"),
        "bucket": bucket,
        "prefix": "workbench",
        "region": "us-east-1",
        "endpoint_url": moto_session.url,
        "imds_url": imds.url,
        "settle_seconds": 0.2,
        "signal_command": ["kill", "-s", "{signal}", "{pid}"],
    }
    path = root / "durable.json"
    path.write_text(json.dumps(config))
    return agent.load_config(str(path))


def test_a_reclaimed_run_resumes_from_s3_and_equals_the_uninterrupted_one(
    reference: Path,  # noqa: F811
    tmp_path: Path,
    digits_dir: Path,
    run_cli: RunCli,
    moto_session,
    bucket: str,
) -> None:
    imds = FakeImds()
    try:
        first = _config(tmp_path / "first", moto_session, bucket, imds)
        built = agent.build(first)
        proc = _train(digits_dir, Path(first["outputs_dir"]), RUN)
        assert proc.stdout is not None
        for line in proc.stdout:  # a quarter into epoch 2
            if line.startswith("epoch 1/2"):
                seconds = float(re.search(r"([0-9.]+)s$", line.strip()).group(1))  # type: ignore[union-attr]
                time.sleep(0.25 * seconds)
                break
        imds.notice()
        noticed = time.monotonic()
        result = agent.once(*built)
        (acted,) = result["acted"]
        assert acted["run"] == RUN and acted["checkpoint_saved"] is True, result
        proc.communicate(timeout=120)
        assert proc.returncode == 128 + 15
        time.sleep(0.3)
        agent.once(*built)  # the next pass: checkpoint, progress and record to S3
        saved_in = time.monotonic() - noticed
        progress = json.loads((Path(first["outputs_dir"]) / RUN / "progress.json").read_text())
        step = progress["step"]
        # Mostly mid-epoch 2; a loaded machine can deliver the signal while epoch 1 is saved
        # (stopped after epoch 1) or at epoch 2's last step: the resume is exact from each.
        epoch = progress["epoch"]
        assert progress["state"] == "stopped" and (epoch, step) in {
            (1, STEPS),
            *((2, n) for n in range(1, STEPS + 1)),
        }
        print(f"notice -> checkpoint in S3: {saved_in:.2f} s (step {step} of {STEPS})")
    finally:
        imds.down()

    # The instance and its disk are gone; a replacement starts from S3 alone.
    shutil.rmtree(tmp_path / "first")
    imds = FakeImds()
    try:
        second = _config(tmp_path / "second", moto_session, bucket, imds)
        restored = agent.restore(second, RUN)
        assert f"{RUN}/checkpoint.pt" in restored and f"{RUN}/interruption.json" in restored
    finally:
        imds.down()
    out = Path(second["outputs_dir"])
    _resume(run_cli, digits_dir, out, RUN, step, epoch)
    assert learning_curve(out / RUN) == learning_curve(reference)
    assert metrics(out / RUN)["best_val_acc"] == metrics(reference)["best_val_acc"]
    record = json.loads((out / RUN / "interruption.json").read_text())
    assert record["kind"] == "instance-action" and record["signal"] == "SIGTERM"
