"""Filters for the ec2_gpu_instance role: SSH source address and the cost receipt."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Any

from ansible.errors import AnsibleFilterError

# Linux instances are billed per second with a one-minute minimum.
_MINIMUM_BILLED_SECONDS = 60


def ssh_cidr(value: Any) -> str:
    """An address or network as a CIDR: 203.0.113.7 -> 203.0.113.7/32, host bits cleared.

    Surrounding whitespace is ignored, so the body of a "what is my address" service can be
    passed as it comes.
    """
    text = str(value).strip()
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError as exc:
        raise AnsibleFilterError(f"{text!r} is not an IPv4 or IPv6 address or network") from exc


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        moment = value
    else:
        text = str(value).strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError as exc:
            raise AnsibleFilterError(f"{value!r} is not an ISO 8601 time") from exc
    # EC2 reports UTC; a naive value is taken as UTC too.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _human(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s"


def ec2_receipt(
    launch_time: Any, hourly_price: float | str | None, now: Any = None
) -> dict[str, Any]:
    """Uptime since launch and its estimated on-demand cost (None when the price is unknown)."""
    start = _parse_time(launch_time)
    end = _parse_time(now) if now is not None else datetime.now(UTC)
    seconds = max(0, int((end - start).total_seconds()))
    price = None if hourly_price in (None, "") else float(hourly_price)
    cost = None
    if price is not None:
        billed = max(seconds, _MINIMUM_BILLED_SECONDS)
        cost = round(billed / 3600 * price, 4)
    return {
        "uptime_seconds": seconds,
        "uptime": _human(seconds),
        "hourly_price": price,
        "estimated_cost": cost,
    }


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"ssh_cidr": ssh_cidr, "ec2_receipt": ec2_receipt}
