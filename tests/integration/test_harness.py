"""The test harness's own parts work: Docker engine, local base image, moto server."""

from __future__ import annotations


def test_base_image_runs_python(docker_client, debian_base_image) -> None:
    out = docker_client.containers.run(
        debian_base_image, ["python3", "-c", "import sys; print(sys.version_info[:2])"], remove=True
    )
    assert out.decode().strip() == "(3, 11)"
    release = docker_client.containers.run(
        debian_base_image, ["cat", "/etc/debian_version"], remove=True
    )
    assert release.decode().startswith("12.")


def test_moto_server_answers_ec2_on_loopback(moto) -> None:
    assert moto.url.startswith("http://127.0.0.1:")
    ec2 = moto.client("ec2")
    regions = {r["RegionName"] for r in ec2.describe_regions()["Regions"]}
    assert "us-east-1" in regions
    created = ec2.create_key_pair(KeyName="harness-probe")
    assert created["KeyName"] == "harness-probe"


def test_moto_reset_leaves_no_resources(moto) -> None:
    ec2 = moto.client("ec2")
    assert ec2.describe_key_pairs()["KeyPairs"] == []
