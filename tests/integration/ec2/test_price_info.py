"""ec2_price_info through Ansible against moto's server, which does not serve the Price List
API (as an account without pricing:GetProducts, or a closed network): the dated table is
the stated fallback, the spot price still comes from the EC2 API."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def test_without_the_price_list_api_the_table_is_the_stated_fallback(
    repo_root: Path, ansible_env: dict[str, str], moto, tmp_path: Path
) -> None:
    args = {
        "region": "us-east-1",
        "instance_type": "g4dn.xlarge",
        "cache_dir": str(tmp_path / "cache"),
        "fallback_prices": {"g4dn.xlarge": 0.526},
        "fallback_source": "AWS EC2 On-Demand pricing page, Linux, us-east-1",
        "fallback_date": "2025-06-01",
    }
    env = dict(
        ansible_env,
        **moto.env,
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
    )
    proc = subprocess.run(
        ["ansible", "localhost", "-m", "wyvern.workbench.ec2_price_info", "-a", json.dumps(args)],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert not result.get("failed"), result
    assert result["on_demand"] == {
        "usd_per_hour": 0.526,
        "source": "AWS EC2 On-Demand pricing page, Linux, us-east-1",
        "date": "2025-06-01",
    }
    assert result["fallback_reason"].startswith("the Price List API did not answer"), result
    assert result["changed"] is False and result["cached"] is False
    # moto answers the spot price history: the spot price stands beside on demand.
    assert result["spot"]["source"] == "EC2 spot price history", result
    assert result["spot"]["zone"].startswith("us-east-1"), result
