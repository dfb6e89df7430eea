# Copyright: Wyvern workbench team
# Apache-2.0
"""What an EC2 instance type costs: the AWS Price List API, with a dated table as fallback.

On demand: the Price List API (``pricing:GetProducts``; it answers in us-east-1 only for
this purpose), Linux, shared tenancy, no pre-installed software. Spot: the current spot
price history of the region (lowest current price over its zones). Answers are cached
on the control node for a day; when the API does not answer, the caller's dated table is
used and the result says so and why.

The functions take clients (or factories), so tests give them botocore Stubbers with a
recorded answer; no module state.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PRICING_REGION = "us-east-1"
CACHE_TTL_S = 86400
API_SOURCE = "AWS Price List API"
SPOT_SOURCE = "EC2 spot price history"


def on_demand_filters(region: str, instance_type: str) -> list[dict[str, str]]:
    wanted = {
        "instanceType": instance_type,
        "regionCode": region,
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
        "licenseModel": "No License required",
    }
    return [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in wanted.items()]


def parse_on_demand(price_list: list[str]) -> dict[str, Any] | None:
    """The hourly USD price (and its effective date) from GetProducts' PriceList items."""
    found: list[tuple[float, str]] = []
    for raw in price_list:
        item = json.loads(raw) if isinstance(raw, str) else raw
        for term in item.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                if dimension.get("unit") not in ("Hrs", "Hours"):
                    continue
                usd = dimension.get("pricePerUnit", {}).get("USD")
                try:
                    price = float(usd)
                except (TypeError, ValueError):
                    continue
                if price > 0:
                    found.append((price, str(term.get("effectiveDate", ""))[:10]))
    if not found:
        return None
    # One SKU matches these filters; should several, the dearest is the honest estimate.
    price, date = max(found)
    return {"usd_per_hour": round(price, 6), "source": API_SOURCE, "date": date}


def get_on_demand(pricing, region: str, instance_type: str) -> dict[str, Any] | None:
    answer = pricing.get_products(
        ServiceCode="AmazonEC2",
        Filters=on_demand_filters(region, instance_type),
        FormatVersion="aws_v1",
        MaxResults=10,
    )
    return parse_on_demand(answer.get("PriceList", []))


def get_spot(ec2, instance_type: str, now: float) -> dict[str, Any] | None:
    """The lowest current spot price over the region's zones (each zone's newest entry)."""
    answer = ec2.describe_spot_price_history(
        InstanceTypes=[instance_type],
        ProductDescriptions=["Linux/UNIX"],
        StartTime=datetime.fromtimestamp(now, tz=UTC),
    )
    newest: dict[str, tuple[datetime, float]] = {}
    for entry in answer.get("SpotPriceHistory", []):
        zone, stamp = entry.get("AvailabilityZone", "?"), entry.get("Timestamp")
        try:
            price = float(entry["SpotPrice"])
        except (KeyError, TypeError, ValueError):
            continue
        if not isinstance(stamp, datetime):
            continue
        if zone not in newest or stamp > newest[zone][0]:
            newest[zone] = (stamp, price)
    if not newest:
        return None
    zone, (stamp, price) = min(newest.items(), key=lambda kv: (kv[1][1], kv[0]))
    return {
        "usd_per_hour": round(price, 6),
        "zone": zone,
        "source": SPOT_SOURCE,
        "date": stamp.astimezone(UTC).strftime("%Y-%m-%d"),
    }


def cache_path(cache_dir: str | os.PathLike[str], region: str, instance_type: str) -> Path:
    return Path(cache_dir) / f"{region}-{instance_type}.json"


def load_cache(path: Path, now: float, ttl: int) -> dict[str, Any] | None:
    try:
        cached = json.loads(path.read_text())
        fetched = float(cached["fetched_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not 0 <= now - fetched < ttl or not cached.get("on_demand"):
        return None
    return cached


def save_cache(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def from_table(
    instance_type: str, table: dict[str, Any], source: str, date: str
) -> dict[str, Any] | None:
    price = table.get(instance_type)
    if price is None:
        return None
    return {"usd_per_hour": float(price), "source": source, "date": date}


def prices(
    pricing: Callable[[], Any],
    ec2: Callable[[], Any],
    region: str,
    instance_type: str,
    *,
    cache_dir: str | os.PathLike[str] | None,
    ttl: int = CACHE_TTL_S,
    table: dict[str, Any] | None = None,
    table_source: str = "price table",
    table_date: str = "",
    now: float | None = None,
    api_errors: tuple[type[BaseException], ...] = (Exception,),
) -> dict[str, Any]:
    """On-demand and spot prices, from the cache, the API or (on demand only) the table.

    The result: ``on_demand`` and ``spot`` (each ``{usd_per_hour, source, date}`` or None),
    ``cached`` (whether the API answer came from the cache) and ``fallback_reason`` (why
    the table was used, or None).
    """
    now = time.time() if now is None else now
    path = cache_path(cache_dir, region, instance_type) if cache_dir else None
    cached = load_cache(path, now, ttl) if path else None
    if cached:
        return {
            "on_demand": cached["on_demand"],
            "spot": cached.get("spot"),
            "cached": True,
            "fallback_reason": None,
        }

    reason = None
    on_demand = None
    try:
        on_demand = get_on_demand(pricing(), region, instance_type)
        if on_demand is None:
            reason = (
                f"the Price List API knows no Linux on-demand price for {instance_type} in {region}"
            )
    except api_errors as exc:
        reason = f"the Price List API did not answer ({_short(exc)})"
    spot = None
    try:
        spot = get_spot(ec2(), instance_type, now)
    except api_errors:
        spot = None

    if on_demand is not None:
        if path:
            save_cache(path, {"fetched_at": now, "on_demand": on_demand, "spot": spot})
        return {"on_demand": on_demand, "spot": spot, "cached": False, "fallback_reason": None}
    fallback = from_table(instance_type, table or {}, table_source, table_date)
    return {"on_demand": fallback, "spot": spot, "cached": False, "fallback_reason": reason}


def _short(exc: BaseException) -> str:
    """One short line: an API error's code and message (an HTML error page left out, as an
    endpoint that does not serve the API sends), else the exception's first line."""
    error = (getattr(exc, "response", None) or {}).get("Error") or {}
    code, message = str(error.get("Code") or ""), str(error.get("Message") or "").strip()
    if code:
        if code.isdigit():
            code = f"HTTP {code}"
        if message and not message.startswith("<"):
            code = f"{code}: {message.splitlines()[0]}"
        return code[:200]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return text[:200]
