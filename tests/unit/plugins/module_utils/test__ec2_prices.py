"""EC2 prices (module_utils/_ec2_prices.py) against botocore Stubbers (the SDK boundary).

moto does not serve the Price List API, so GetProducts answers with a stored answer in the
API's own shape (data/pricing_get_products_g4dn_xlarge.json: one product, its on-demand
and reserved terms, the price list items as JSON strings, as the API sends them).
"""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import botocore.exceptions
import pytest
from ansible_collections.wyvern.workbench.plugins.module_utils import _ec2_prices as ep
from botocore.stub import ANY, Stubber

ANSWER = json.loads(
    (Path(__file__).parent / "data" / "pricing_get_products_g4dn_xlarge.json").read_text()
)
NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC).timestamp()
ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)
TABLE = {"g4dn.xlarge": 0.5, "g5.xlarge": 1.0}


def client(service: str):
    return boto3.client(
        service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )


@pytest.fixture
def pricing():
    c = client("pricing")
    with Stubber(c) as stub:
        yield c, stub


@pytest.fixture
def ec2():
    c = client("ec2")
    with Stubber(c) as stub:
        yield c, stub


def spot_answer(stub: Stubber) -> None:
    at = datetime.fromtimestamp(NOW, tz=UTC)
    stub.add_response(
        "describe_spot_price_history",
        {
            "SpotPriceHistory": [
                # us-east-1a: an older, cheaper entry is superseded by its newest one.
                {"AvailabilityZone": "us-east-1a", "SpotPrice": "0.1500", "Timestamp": at - timedelta(hours=5),
                 "InstanceType": "g4dn.xlarge", "ProductDescription": "Linux/UNIX"},
                {"AvailabilityZone": "us-east-1a", "SpotPrice": "0.2400", "Timestamp": at - timedelta(hours=1),
                 "InstanceType": "g4dn.xlarge", "ProductDescription": "Linux/UNIX"},
                {"AvailabilityZone": "us-east-1b", "SpotPrice": "0.2131", "Timestamp": at - timedelta(hours=2),
                 "InstanceType": "g4dn.xlarge", "ProductDescription": "Linux/UNIX"},
            ]
        },
        {"InstanceTypes": ["g4dn.xlarge"], "ProductDescriptions": ["Linux/UNIX"], "StartTime": ANY},
    )  # fmt: skip


def products_answer(stub: Stubber, answer: dict | None = None) -> None:
    stub.add_response(
        "get_products",
        answer or ANSWER,
        {
            "ServiceCode": "AmazonEC2",
            "Filters": ep.on_demand_filters("us-east-1", "g4dn.xlarge"),
            "FormatVersion": "aws_v1",
            "MaxResults": 10,
        },
    )


def run(pricing_client, ec2_client, cache_dir, now=NOW, **kw):
    return ep.prices(
        lambda: pricing_client,
        lambda: ec2_client,
        "us-east-1",
        "g4dn.xlarge",
        cache_dir=cache_dir,
        table=TABLE,
        table_source="AWS EC2 On-Demand pricing page",
        table_date="2025-06-01",
        now=now,
        api_errors=ERRORS,
        **kw,
    )


def test_the_api_answer_gives_on_demand_and_the_lowest_current_spot(pricing, ec2, tmp_path):
    (p, pstub), (e, estub) = pricing, ec2
    products_answer(pstub)
    spot_answer(estub)
    result = run(p, e, tmp_path)
    assert result["on_demand"] == {
        "usd_per_hour": 0.526,  # on demand, not the reserved term's 0.331
        "source": "AWS Price List API",
        "date": "2026-11-01",
    }
    assert result["spot"] == {
        "usd_per_hour": 0.2131,  # us-east-1a's newest is 0.24: its older 0.15 is gone
        "zone": "us-east-1b",
        "source": "EC2 spot price history",
        "date": "2026-11-27",
    }
    assert result["cached"] is False and result["fallback_reason"] is None
    pstub.assert_no_pending_responses()


def test_an_answer_is_reused_for_a_day_then_asked_again(pricing, ec2, tmp_path):
    (p, pstub), (e, estub) = pricing, ec2
    products_answer(pstub)
    spot_answer(estub)
    first = run(p, e, tmp_path)
    # Within the day: no call at all (a Stubber with no queued answer would raise).
    again = run(p, e, tmp_path, now=NOW + 86399)
    assert again["cached"] is True
    assert again["on_demand"] == first["on_demand"] and again["spot"] == first["spot"]
    # A day later the API is asked again.
    products_answer(pstub)
    spot_answer(estub)
    later = run(p, e, tmp_path, now=NOW + 86400)
    assert later["cached"] is False
    pstub.assert_no_pending_responses()


def test_no_api_answer_falls_back_to_the_dated_table_and_says_why(pricing, ec2, tmp_path):
    (p, pstub), (e, estub) = pricing, ec2
    pstub.add_client_error("get_products", "AccessDeniedException", "not allowed")
    estub.add_client_error("describe_spot_price_history", "UnauthorizedOperation", "no")
    result = run(p, e, tmp_path)
    assert result["on_demand"] == {
        "usd_per_hour": 0.5,
        "source": "AWS EC2 On-Demand pricing page",
        "date": "2025-06-01",
    }
    assert result["spot"] is None
    assert result["fallback_reason"].startswith("the Price List API did not answer (")
    assert "AccessDeniedException" in result["fallback_reason"]
    # A fallback is not cached: the next call asks the API again.
    assert not list(tmp_path.iterdir())


def test_an_unknown_type_is_none_with_the_reason(pricing, ec2, tmp_path):
    (p, pstub), (e, estub) = pricing, ec2
    products_answer(pstub, {"FormatVersion": "aws_v1", "PriceList": []})
    estub.add_response("describe_spot_price_history", {"SpotPriceHistory": []})
    result = ep.prices(
        lambda: p,
        lambda: e,
        "us-east-1",
        "g4dn.xlarge",
        cache_dir=tmp_path,
        table={},
        now=NOW,
        api_errors=ERRORS,
    )
    assert result["on_demand"] is None and result["spot"] is None
    assert (
        "knows no Linux on-demand price for g4dn.xlarge in us-east-1" in result["fallback_reason"]
    )


def test_a_corrupt_or_future_cache_is_ignored(tmp_path):
    path = ep.cache_path(tmp_path, "us-east-1", "g4dn.xlarge")
    path.write_text("{not json")
    assert ep.load_cache(path, NOW, 86400) is None
    path.write_text(json.dumps({"fetched_at": NOW + 3600, "on_demand": {"usd_per_hour": 1}}))
    assert ep.load_cache(path, NOW, 86400) is None


_spec = importlib.util.spec_from_file_location(
    "ec2_gpu_instance_filters",
    Path(__file__).resolve().parents[4] / "plugins/filter/ec2_gpu_instance.py",
)
assert _spec and _spec.loader
filters = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(filters)


def _stop_receipt(price: dict) -> str:
    """The stop receipt the role prints, priced as stopped.yml prices it."""
    lines = filters.ec2_stop_receipt(
        [{"instance_id": "i-1", "instance_type": "g4dn.xlarge", "state": {"name": "running"},
          "launch_time": "2026-11-27T06:00:00+00:00"}],
        [], {"g4dn.xlarge": price["usd_per_hour"]}, price["source"], {}, "EBS table",
        now="2026-11-27T08:00:00+00:00", spot=filters.ec2_spot_text(price),
    )  # fmt: skip
    return filters.ec2_stop_receipt_text(lines, "exp1")


def test_the_launch_message_and_the_receipt_name_the_api_and_the_spot_price(pricing, ec2, tmp_path):
    (p, pstub), (e, estub) = pricing, ec2
    products_answer(pstub)
    spot_answer(estub)
    price = filters.ec2_price(run(p, e, tmp_path))
    assert filters.ec2_price_text(price, "g4dn.xlarge") == (
        "about 0.526 USD/hour on demand (AWS Price List API, 2026-11-01); "
        "spot 0.2131 USD/hour now in us-east-1b (EC2 spot price history, 2026-11-27)"
    )
    assert (
        "i-1 (g4dn.xlarge) stopped after 2h 00m 00s up since its last start: about 1.052 USD at"
        " 0.526 USD/hour on demand (AWS Price List API, 2026-11-01); spot 0.2131 USD/hour now"
        " in us-east-1b (EC2 spot price history, 2026-11-27)."
    ) in _stop_receipt(price)


def test_the_launch_message_and_the_receipt_state_the_table_and_why(pricing, ec2, tmp_path):
    (p, pstub), (e, estub) = pricing, ec2
    # What an endpoint that does not serve the API sends (moto: HTTP 500, an HTML page).
    pstub.add_client_error("get_products", "500", "<!doctype html><html>...", 500)
    estub.add_response("describe_spot_price_history", {"SpotPriceHistory": []})
    price = filters.ec2_price(run(p, e, tmp_path))
    assert filters.ec2_price_text(price, "g4dn.xlarge") == (
        "about 0.5 USD/hour on demand (dated table, 2025-06-01 (AWS EC2 On-Demand pricing page):"
        " the Price List API did not answer (HTTP 500)); no current spot price"
    )
    assert "USD at 0.5 USD/hour on demand (dated table, 2025-06-01" in _stop_receipt(price)
    # Neither the API nor the table: the message says what to add.
    unknown = filters.ec2_price(
        {"on_demand": None, "spot": None, "fallback_reason": "the Price List API did not answer"}
    )
    assert filters.ec2_price_text(unknown, "p5.48xlarge") == (
        "price unknown (no price: the Price List API did not answer): add p5.48xlarge to"
        " ec2_gpu_instance_prices; no current spot price"
    )
