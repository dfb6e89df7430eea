"""Filters for the ec2_gpu_instance role and the aws_ec2 inventory.

SSH source address, the connection settings (one definition for the role's add_host, the
per-workbench connection file and the dynamic inventory), SSH config entry, cost receipts
(teardown and stop), the durable outputs' S3 names and the instance's IAM policy.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
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


def _usd(value: Any) -> str:
    """A price as people write it: 0.526, 0.00001 (never 1e-05)."""
    return format(float(value), ".6f").rstrip("0").rstrip(".") or "0"


def ec2_price(answer: dict[str, Any] | None) -> dict[str, Any]:
    """ec2_price_info's answer as the role records it: the on-demand USD/hour (or None), where
    it comes from in words ("AWS Price List API, <date>" or "dated table, <date> (<table>):
    <why the API was not used>"), and the lowest current spot price beside it."""
    answer = answer or {}
    on_demand = answer.get("on_demand") or None
    spot = answer.get("spot") or None
    reason = answer.get("fallback_reason")
    if on_demand is None:
        source = f"no price: {reason}" if reason else "no price"
    elif reason:
        source = f"dated table, {on_demand.get('date') or 'undated'} ({on_demand.get('source')}): {reason}"
    else:
        source = f"{on_demand.get('source')}, {on_demand.get('date')}"
    return {
        "usd_per_hour": None if on_demand is None else float(on_demand["usd_per_hour"]),
        "source": source,
        "date": None if on_demand is None else on_demand.get("date"),
        "spot_usd_per_hour": None if spot is None else float(spot["usd_per_hour"]),
        "spot_zone": None if spot is None else spot.get("zone"),
        "spot_source": None if spot is None else f"{spot.get('source')}, {spot.get('date')}",
    }


def ec2_price_text(price: dict[str, Any], instance_type: str) -> str:
    """The launch message's price: on demand with its source, the spot price beside it."""
    if price.get("usd_per_hour") is None:
        text = (
            f"price unknown ({price.get('source')}): add {instance_type} to ec2_gpu_instance_prices"
        )
    else:
        text = f"about {_usd(price['usd_per_hour'])} USD/hour on demand ({price['source']})"
    return f"{text}; {ec2_spot_text(price)}"


def ec2_spot_text(price: dict[str, Any]) -> str:
    if price.get("spot_usd_per_hour") is None:
        return "no current spot price"
    return (
        f"spot {_usd(price['spot_usd_per_hour'])} USD/hour now in {price['spot_zone']}"
        f" ({price['spot_source']})"
    )


def _config_value(name: str, value: Any) -> str:
    text = str(value).strip()
    if not text or any(c in text for c in '\n\r"\0'):
        raise AnsibleFilterError(
            f"SSH config {name} {value!r} is empty or holds a newline or a quote"
        )
    return f'"{text}"' if any(c.isspace() for c in text) else text


def _knows(known_hosts_text: str, name: str) -> bool:
    """Whether a known_hosts text holds a plain (unhashed) entry for ``name``."""
    for line in known_hosts_text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if fields[0].startswith("@"):  # @cert-authority / @revoked markers
            continue
        if name in fields[0].split(","):
            return True
    return False


def ssh_config_entry(
    alias: str,
    host_name: str,
    user: str,
    identity_file: str,
    known_hosts: str,
    host_key_alias: str,
    known_hosts_text: str = "",
    port: int | str = 22,
) -> str:
    """The ``Host <alias>`` entry of ~/.ssh/config for a workbench instance.

    The host key is looked up in the workbench's own known_hosts under ``host_key_alias``
    (the instance's name, not its address), so ``ssh <alias>`` never writes
    ~/.ssh/known_hosts and an address that AWS recycles never meets an old key. Once
    ``known_hosts_text`` holds that key the entry checks it strictly; before, it is trusted
    on first use into the workbench's file.
    """
    strict = "yes" if _knows(known_hosts_text or "", str(host_key_alias).strip()) else "accept-new"
    options = [
        ("HostName", host_name),
        ("Port", port),
        ("User", user),
        ("IdentityFile", identity_file),
        ("IdentitiesOnly", "yes"),
        ("HostKeyAlias", host_key_alias),
        ("UserKnownHostsFile", known_hosts),
        ("StrictHostKeyChecking", strict),
    ]
    lines = [f"Host {_config_value('Host', alias)}"]
    lines += [f"  {key} {_config_value(key, value)}" for key, value in options]
    return "\n".join(lines) + "\n"


def ec2_ami_login_user(ami_name: Any, users: dict[str, str], given: Any = "") -> str:
    """The login user of an AMI: ``given`` when set, else by the first word of ``users``
    (in its order) that the AMI's name contains, case-insensitively; "" when none does."""
    if given:
        return str(given)
    name = str(ami_name or "").lower()
    return next((user for word, user in users.items() if str(word).lower() in name), "")


def ec2_gpu_summary(gpu_info: Any) -> str:
    """An instance type's GPUs as "1 x T4" (DescribeInstanceTypes' gpu_info, snake case)."""
    gpus = (gpu_info or {}).get("gpus", []) if isinstance(gpu_info, dict) else []
    return ", ".join(f"{gpu.get('count', 1)} x {gpu.get('name', '?')}" for gpu in gpus) or "none"


def ec2_teardown_receipt(
    instances: list[dict[str, Any]],
    prices: dict[str, Any],
    price_source: str,
    now: Any = None,
) -> list[dict[str, Any]]:
    """One receipt line per instance about to be terminated (ec2_instance_info's records)."""
    return [
        {
            "instance_id": inst["instance_id"],
            "instance_type": inst["instance_type"],
            "launch_time": inst["launch_time"],
            "price_source": price_source,
            **ec2_receipt(inst["launch_time"], (prices or {}).get(inst["instance_type"]), now),
        }
        for inst in instances
    ]


def ec2_receipt_text(receipt: list[dict[str, Any]], workbench: str) -> str:
    """What teardown says it cost: one sentence per instance, or that nothing ran."""
    if not receipt:
        return f"Nothing was running for workbench {workbench}."
    sentences = []
    for line in receipt:
        if line.get("estimated_cost") is None:
            cost = "cost unknown (no price for this type)"
        else:
            cost = (
                f"about {line['estimated_cost']} USD at {line['hourly_price']} USD/hour"
                f" ({line['price_source']})"
            )
        sentences.append(
            f"{line['instance_id']} ({line['instance_type']}) ran {line['uptime']}: {cost}."
        )
    return " ".join(sentences)


def _volumes_of(instance_id: str, volumes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        vol
        for vol in volumes or []
        if any(att.get("instance_id") == instance_id for att in vol.get("attachment_set") or [])
    ]


def ec2_stop_receipt(
    instances: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    prices: dict[str, Any],
    price_source: str,
    volume_prices: dict[str, Any],
    volume_price_source: str,
    now: Any = None,
    spot: str | None = None,
) -> list[dict[str, Any]]:
    """One receipt line per instance about to be stopped (ec2_instance_info's records).

    `spot` (ec2_spot_text's words) stands beside the on-demand rate the cost is worked at.

    An instance that runs gets its uptime and cost since it was last started (EC2 sets
    launch_time at every start, so this is the billing period that the stop ends); one
    already stopped gets none. Each gets what its EBS volumes (ec2_vol_info's records, the
    ones attached to it) cost per month while it stays stopped.
    """
    lines = []
    for inst in instances:
        state = (inst.get("state") or {}).get("name", "")
        running = state in ("pending", "running")
        attached = _volumes_of(inst["instance_id"], volumes)
        gigabytes = sum(int(vol.get("size") or 0) for vol in attached)
        used = {
            str(vol.get("type")): (volume_prices or {}).get(vol.get("type")) for vol in attached
        }
        monthly = None
        if all(price not in (None, "") for price in used.values()):
            monthly = sum(
                int(vol.get("size") or 0) * float(used[str(vol.get("type"))]) for vol in attached
            )
        line: dict[str, Any] = {
            "instance_id": inst["instance_id"],
            "instance_type": inst["instance_type"],
            "state": state,
            "was_running": running,
            "launch_time": inst.get("launch_time"),
            "price_source": price_source,
            "volume_gb": gigabytes,
            "volume_types": sorted(used),
            "volume_prices": {kind: used[kind] for kind in sorted(used)},
            "volume_monthly_cost": None if monthly is None else round(monthly, 2),
            "volume_price_source": volume_price_source,
            "spot": spot,
        }
        if running:
            hourly = (prices or {}).get(inst["instance_type"])
            line.update(ec2_receipt(inst["launch_time"], hourly, now))
        else:
            line.update(uptime_seconds=0, uptime="", hourly_price=None, estimated_cost=None)
        lines.append(line)
    return lines


def ec2_stop_receipt_text(receipt: list[dict[str, Any]], workbench: str) -> str:
    """What stop says: the run it ended and its cost, then what the stopped volumes cost."""
    if not receipt:
        return f"No instance of workbench {workbench} to stop."
    sentences = []
    for line in receipt:
        head = f"{line['instance_id']} ({line['instance_type']})"
        if not line["was_running"]:
            sentences.append(f"{head} was stopped already.")
        elif line.get("estimated_cost") is None:
            sentences.append(
                f"{head} stopped after {line['uptime']} up: cost unknown (no price for this type)."
            )
        else:
            sentences.append(
                f"{head} stopped after {line['uptime']} up since its last start: about"
                f" {line['estimated_cost']} USD at {line['hourly_price']} USD/hour"
                f"{' on demand' if line.get('spot') else ''} ({line['price_source']})"
                f"{'; ' + line['spot'] if line.get('spot') else ''}."
            )
        kinds = "/".join(line["volume_types"]) or "EBS"
        if line["volume_monthly_cost"] is None:
            volume_cost = "cost unknown (no price for its volume type)"
        else:
            rates = ", ".join(
                f"{price} USD per GB-month of {kind}"
                for kind, price in line["volume_prices"].items()
            )
            volume_cost = (
                f"about {line['volume_monthly_cost']} USD/month"
                f" ({rates}; {line['volume_price_source']})"
            )
        sentences.append(
            f"While stopped it bills no compute; its {line['volume_gb']} GB of {kinds} volume"
            f" (image, data, outputs) is kept: {volume_cost}."
        )
    return " ".join(sentences)


# The file the role writes into the workbench's config directory on every `present` and
# deletes on `absent`; the dynamic inventory reads it.
CONNECTION_FILE = "connection.json"
# Connection settings for an instance that has no connection file (provisioned before it
# existed, or from another machine): the role's defaults.
_DEFAULT_SSH_USER = "ubuntu"
_DEFAULT_PYTHON = "/usr/bin/python3"


def ec2_gpu_instance_config_dir(workbench: Any) -> str:
    """The workbench's own directory: $XDG_CONFIG_HOME (or ~/.config)/wyvern/<workbench>.

    It depends on the workbench name alone, so the inventory finds it without knowing where
    ec2_gpu_instance_key_path points.
    """
    name = str(workbench).strip()
    if not name or "/" in name or name in (".", ".."):
        raise AnsibleFilterError(f"workbench name {workbench!r} cannot name a directory")
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.environ.get("HOME", "~"), ".config")
    return os.path.join(base, "wyvern", name)


def ec2_gpu_instance_connection_file(workbench: Any) -> str:
    """The workbench's connection file, in its config directory."""
    return os.path.join(ec2_gpu_instance_config_dir(workbench), CONNECTION_FILE)


def ec2_gpu_instance_connection(
    key_path: Any,
    ssh_user: Any,
    host_key: Any,
    host_key_alias: Any,
    python_interpreter: Any = _DEFAULT_PYTHON,
) -> dict[str, str]:
    """The host variables that reach a workbench instance over SSH.

    The host key is looked up in the known_hosts beside the private key, under the
    instance's name (HostKeyAlias), never in ~/.ssh/known_hosts; strictly when the role gave
    the instance its host key (``host_key=generated``), trust on first use otherwise.
    """
    key = str(key_path)
    known_hosts = os.path.join(os.path.dirname(key), "known_hosts")
    strict = "yes" if str(host_key) == "generated" else "accept-new"
    return {
        "ansible_user": str(ssh_user),
        "ansible_ssh_private_key_file": key,
        "ansible_ssh_common_args": (
            f"-o StrictHostKeyChecking={strict} -o UserKnownHostsFile={known_hosts}"
            f" -o HostKeyAlias={host_key_alias} -o IdentitiesOnly=yes"
        ),
        "ansible_python_interpreter": str(python_interpreter),
        "known_hosts": known_hosts,
        "host_key_alias": str(host_key_alias),
    }


def ec2_gpu_instance_saved_connection(
    tags: dict[str, Any], instance_id: Any = ""
) -> dict[str, str]:
    """The connection settings the role recorded for the instance with these tags.

    Read from the workbench's connection file when it was written for this owner and
    instance name; otherwise (provisioned elsewhere, or before the file existed) the role's
    defaults for that workbench, with the login user and host key mode from the tags.
    """
    workbench = tags.get("workbench:name", "")
    alias = str(tags.get("Name") or instance_id)
    # Nodes 1..N-1 of a workbench of several (tag workbench:node, Name <node 0's>-node<i>)
    # boot with node 0's user data, so node 0's host key: they are checked under its alias.
    rank = str(tags.get("workbench:node") or "0")
    if rank != "0" and alias.endswith(f"-node{rank}"):
        alias = alias[: -len(f"-node{rank}")]
    path = Path(ec2_gpu_instance_connection_file(workbench))
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = {}
    if (
        isinstance(saved, dict)
        and saved.get("owner") == tags.get("workbench:owner")
        and saved.get("host_key_alias") == alias
    ):
        return {key: str(value) for key, value in saved.items() if key != "owner"}
    return ec2_gpu_instance_connection(
        os.path.join(ec2_gpu_instance_config_dir(workbench), "id_ed25519"),
        tags.get("workbench:ssh_user") or _DEFAULT_SSH_USER,
        tags.get("workbench:host_key") or "first_use",
        alias,
    )


# S3 bucket names: 3-63 lower-case letters, digits, dots and dashes, starting and ending
# with a letter or digit (no dots here: TLS virtual-host names break on them).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
# A workbench prefix: path segments of safe characters; no IAM wildcard (* ?), no
# policy variable (${...}), no empty segment, no leading or trailing slash.
_PREFIX = re.compile(r"^[A-Za-z0-9_.=-]+(/[A-Za-z0-9_.=-]+)*$")
# IAM names (roles, instance profiles): 1-128 of these characters.
_PROFILE = re.compile(r"^[A-Za-z0-9+=,.@_-]{1,128}$")


def ec2_outputs_bucket_name(owner: Any, account: Any, region: Any) -> str:
    """The owner's default outputs bucket: wyvern-<account>-<region>-<owner>, 63 chars max.

    Bucket names are global: the account id makes it this account's, the region keeps the
    instance's uploads in its own region.
    """
    clean = re.sub(r"[^a-z0-9-]+", "-", str(owner).lower()).strip("-") or "owner"
    name = f"wyvern-{account}-{region}-{clean}"[:63].rstrip("-")
    if not _BUCKET.match(name):
        raise AnsibleFilterError(f"cannot make an S3 bucket name from owner {owner!r}")
    return name


def ec2_outputs_policy(
    bucket: Any, prefix: Any, partition: Any = "aws", stop_profile: Any = ""
) -> dict[str, Any]:
    """The instance role's only permissions: objects under <prefix>/ of one bucket.

    Put, get and list under the prefix (list with an s3:prefix condition on the bucket);
    nothing else in the bucket, no other bucket, no delete (the instance only adds; the
    control node removes the prefix at teardown, after it has everything).

    With `stop_profile` (the workbench's own instance profile name): ec2:StopInstances on
    instances that carry that profile, i.e. the workbench's own instance, so that the idle
    agent can stop it where powering off would terminate outputs that are not safe yet.
    No start, no terminate, no other instance. (EC2 refuses to stop a one-time spot
    instance whatever the policy says.)
    """
    bucket, prefix, stop_profile = str(bucket), str(prefix), str(stop_profile or "")
    if not _BUCKET.match(bucket):
        raise AnsibleFilterError(
            f"S3 bucket {bucket!r} is not a valid bucket name (lower-case letters, digits, dashes)"
        )
    if not _PREFIX.match(prefix):
        raise AnsibleFilterError(
            f"S3 prefix {prefix!r} must be path segments of letters, digits, _ . = - "
            "(no wildcard, no leading or trailing slash)"
        )
    arn = f"arn:{partition}:s3:::{bucket}"
    policy: dict[str, Any] = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ObjectsUnderTheWorkbenchPrefix",
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"],
                "Resource": f"{arn}/{prefix}/*",
            },
            {
                "Sid": "ListOnlyTheWorkbenchPrefix",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": arn,
                "Condition": {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}},
            },
        ],
    }
    if stop_profile:
        if not _PROFILE.match(stop_profile):
            raise AnsibleFilterError(
                f"instance profile name {stop_profile!r} may hold only letters, digits and + = , . @ _ -"
            )
        policy["Statement"].append(
            {
                "Sid": "StopOnlyTheWorkbenchInstance",
                "Effect": "Allow",
                "Action": "ec2:StopInstances",
                "Resource": f"arn:{partition}:ec2:*:*:instance/*",
                "Condition": {
                    "ArnLike": {
                        "ec2:InstanceProfile": f"arn:{partition}:iam::*:instance-profile/{stop_profile}"
                    }
                },
            }
        )
    return policy


def ec2_assume_role_policy(service: Any = "ec2.amazonaws.com") -> dict[str, Any]:
    """Trust policy: only EC2 (the instance profile) may take the role."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": str(service)},
                "Action": "sts:AssumeRole",
            }
        ],
    }


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "ssh_cidr": ssh_cidr,
            "ec2_receipt": ec2_receipt,
            "ec2_teardown_receipt": ec2_teardown_receipt,
            "ec2_receipt_text": ec2_receipt_text,
            "ec2_stop_receipt": ec2_stop_receipt,
            "ec2_stop_receipt_text": ec2_stop_receipt_text,
            "ec2_ami_login_user": ec2_ami_login_user,
            "ec2_gpu_summary": ec2_gpu_summary,
            "ec2_price": ec2_price,
            "ec2_price_text": ec2_price_text,
            "ec2_spot_text": ec2_spot_text,
            "ssh_config_entry": ssh_config_entry,
            "ec2_gpu_instance_config_dir": ec2_gpu_instance_config_dir,
            "ec2_gpu_instance_connection_file": ec2_gpu_instance_connection_file,
            "ec2_gpu_instance_connection": ec2_gpu_instance_connection,
            "ec2_gpu_instance_saved_connection": ec2_gpu_instance_saved_connection,
            "ec2_outputs_bucket_name": ec2_outputs_bucket_name,
            "ec2_outputs_policy": ec2_outputs_policy,
            "ec2_assume_role_policy": ec2_assume_role_policy,
        }
