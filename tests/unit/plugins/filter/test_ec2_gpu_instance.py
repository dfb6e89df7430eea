"""The ec2_gpu_instance filters: SSH CIDR normalisation and the teardown receipt."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

ROOT = Path(__file__).resolve().parents[4]
_spec = importlib.util.spec_from_file_location(
    "ec2_gpu_instance_filters", ROOT / "plugins/filter/ec2_gpu_instance.py"
)
assert _spec and _spec.loader
filters = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(filters)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("203.0.113.7\n", "203.0.113.7/32"),  # checkip.amazonaws.com's body, as it comes
        ("203.0.113.7/32", "203.0.113.7/32"),
        ("10.1.2.3/16", "10.1.0.0/16"),
        ("2001:db8::1", "2001:db8::1/128"),
        ("0.0.0.0/0", "0.0.0.0/0"),
    ],
)
def test_ssh_cidr_normalises_addresses_and_networks(given: str, expected: str) -> None:
    assert filters.ssh_cidr(given) == expected


@pytest.mark.parametrize("given", ["", "not-an-address", "203.0.113.300", "<html>busy</html>"])
def test_ssh_cidr_rejects_anything_else(given: str) -> None:
    with pytest.raises(AnsibleFilterError, match="is not an IPv4 or IPv6 address"):
        filters.ssh_cidr(given)


def test_receipt_prices_the_uptime_per_second() -> None:
    receipt = filters.ec2_receipt("2026-01-01T10:00:00+00:00", 0.526, now="2026-01-01T12:30:00Z")
    assert receipt == {
        "uptime_seconds": 9000,
        "uptime": "2h 30m 00s",
        "hourly_price": 0.526,
        "estimated_cost": 1.315,
    }


def test_receipt_bills_at_least_one_minute() -> None:
    receipt = filters.ec2_receipt("2026-01-01T10:00:00Z", "3.6", now="2026-01-01T10:00:10Z")
    assert receipt["uptime_seconds"] == 10
    assert receipt["estimated_cost"] == pytest.approx(0.06)


def test_receipt_without_a_price_says_unknown_rather_than_zero() -> None:
    receipt = filters.ec2_receipt("2026-01-01T10:00:00", None, now="2026-01-01T11:00:00")
    assert receipt["uptime"] == "1h 00m 00s"
    assert receipt["estimated_cost"] is None


def test_receipt_rejects_a_time_it_cannot_read() -> None:
    with pytest.raises(AnsibleFilterError, match="not an ISO 8601 time"):
        filters.ec2_receipt("yesterday", 1.0)


def test_filters_are_registered_under_their_names() -> None:
    assert set(filters.FilterModule().filters()) == {
        "ssh_cidr",
        "ec2_receipt",
        "ec2_teardown_receipt",
        "ec2_receipt_text",
        "ec2_stop_receipt",
        "ec2_stop_receipt_text",
        "ec2_ami_login_user",
        "ec2_gpu_summary",
        "ec2_price",
        "ec2_price_text",
        "ec2_spot_text",
        "ssh_config_entry",
        "ec2_gpu_instance_config_dir",
        "ec2_gpu_instance_connection_file",
        "ec2_gpu_instance_connection",
        "ec2_gpu_instance_saved_connection",
        "ec2_outputs_bucket_name",
        "ec2_outputs_policy",
        "ec2_assume_role_policy",
    }


ENTRY = {
    "alias": "exp1",
    "host_name": "203.0.113.50",
    "user": "ubuntu",
    "identity_file": "/home/me/.config/wyvern/exp1/id_ed25519",
    "known_hosts": "/home/me/.config/wyvern/exp1/known_hosts",
    "host_key_alias": "wyvern-exp1-me",
}


def _options(entry: str) -> dict[str, str]:
    lines = entry.splitlines()
    assert lines[0] == "Host exp1"
    return dict(line.strip().split(" ", 1) for line in lines[1:])


def test_ssh_config_entry_checks_the_host_key_in_the_workbench_known_hosts() -> None:
    text = "wyvern-exp1-me ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample\n"
    options = _options(filters.ssh_config_entry(**ENTRY, known_hosts_text=text))
    # Never ~/.ssh/known_hosts: the workbench's own file, the key filed under the instance's
    # name (a recycled address meets no old key), and checked strictly once it is known.
    assert options["UserKnownHostsFile"] == ENTRY["known_hosts"]
    assert options["HostKeyAlias"] == "wyvern-exp1-me"
    assert options["StrictHostKeyChecking"] == "yes"
    assert options["HostName"] == "203.0.113.50"
    assert options["Port"] == "22"
    assert options["User"] == "ubuntu"
    assert options["IdentityFile"] == ENTRY["identity_file"]
    assert options["IdentitiesOnly"] == "yes"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# wyvern-exp1-me ssh-ed25519 AAAA\n",
        "wyvern-exp2-me ssh-ed25519 AAAA\n",  # another workbench's key
        "203.0.113.50 ssh-ed25519 AAAA\n",  # the address, not the instance
        "@revoked wyvern-exp1-me ssh-ed25519 AAAA\n",
    ],
)
def test_ssh_config_entry_trusts_on_first_use_until_the_key_is_known(text: str) -> None:
    options = _options(filters.ssh_config_entry(**ENTRY, known_hosts_text=text))
    assert options["StrictHostKeyChecking"] == "accept-new"
    assert options["UserKnownHostsFile"] == ENTRY["known_hosts"]


def test_ssh_config_entry_quotes_paths_with_spaces_and_keeps_the_port() -> None:
    entry = {**ENTRY, "identity_file": "/home/my name/key", "port": 2222}
    options = _options(filters.ssh_config_entry(**entry))
    assert options["IdentityFile"] == '"/home/my name/key"'
    assert options["Port"] == "2222"


@pytest.mark.parametrize(
    ("field", "value"),
    [("host_name", "1.2.3.4\n  ProxyCommand evil"), ("user", ""), ("known_hosts", 'a"b')],
)
def test_ssh_config_entry_refuses_values_that_would_inject_options(field: str, value: str) -> None:
    with pytest.raises(AnsibleFilterError, match="SSH config"):
        filters.ssh_config_entry(**{**ENTRY, field: value})


def test_connection_checks_the_host_key_beside_the_key_under_the_instance_name() -> None:
    conn = filters.ec2_gpu_instance_connection(
        "/keys/exp1/id_ed25519", "ubuntu", "generated", "wyvern-exp1-me", "/usr/bin/python3"
    )
    assert conn["ansible_ssh_private_key_file"] == "/keys/exp1/id_ed25519"
    assert conn["known_hosts"] == "/keys/exp1/known_hosts"
    assert conn["ansible_ssh_common_args"] == (
        "-o StrictHostKeyChecking=yes -o UserKnownHostsFile=/keys/exp1/known_hosts"
        " -o HostKeyAlias=wyvern-exp1-me -o IdentitiesOnly=yes"
    )
    first_use = filters.ec2_gpu_instance_connection("/k/id", "admin", "first_use", "h")
    assert "StrictHostKeyChecking=accept-new" in first_use["ansible_ssh_common_args"]


TAGS = {"workbench:name": "exp1", "workbench:owner": "me", "Name": "wyvern-exp1-me"}


def test_saved_connection_reads_what_the_role_recorded(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    recorded = filters.ec2_gpu_instance_connection(
        "/elsewhere/id_ed25519", "ubuntu", "generated", "wyvern-exp1-me"
    )
    path = Path(filters.ec2_gpu_instance_connection_file("exp1"))
    assert path == tmp_path / "wyvern/exp1/connection.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({**recorded, "owner": "me"}))
    assert filters.ec2_gpu_instance_saved_connection(TAGS, "i-1") == recorded


def test_a_node_of_several_connects_as_node_0_whose_host_key_it_has(tmp_path, monkeypatch) -> None:
    # Node 1 boots with node 0's user data: its host key is node 0's, known under node 0's
    # alias; a node named otherwise is not taken for one (its own alias, the defaults).
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    recorded = filters.ec2_gpu_instance_connection(
        "/elsewhere/id_ed25519", "ubuntu", "generated", "wyvern-exp1-me"
    )
    path = Path(filters.ec2_gpu_instance_connection_file("exp1"))
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({**recorded, "owner": "me"}))
    node1 = {**TAGS, "Name": "wyvern-exp1-me-node1", "workbench:node": "1"}
    assert filters.ec2_gpu_instance_saved_connection(node1, "i-2") == recorded
    node0 = {**TAGS, "workbench:node": "0"}
    assert filters.ec2_gpu_instance_saved_connection(node0, "i-1") == recorded
    odd = {**TAGS, "Name": "wyvern-exp1-me-node1", "workbench:node": "2"}
    conn = filters.ec2_gpu_instance_saved_connection(odd, "i-3")
    assert "HostKeyAlias=wyvern-exp1-me-node1 " in conn["ansible_ssh_common_args"]


@pytest.mark.parametrize("recorded_for", ["nobody", "missing"])
def test_saved_connection_falls_back_to_the_default_layout(
    tmp_path, monkeypatch, recorded_for: str
) -> None:
    # Another owner's workbench of the same name, or one provisioned elsewhere: the role's
    # defaults, with the login user and host key mode from the instance's tags.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    if recorded_for != "missing":
        path = Path(filters.ec2_gpu_instance_connection_file("exp1"))
        path.parent.mkdir(parents=True)
        recorded = filters.ec2_gpu_instance_connection("/elsewhere/id", "u", "generated", "x")
        path.write_text(json.dumps({**recorded, "owner": recorded_for}))
    conn = filters.ec2_gpu_instance_saved_connection(
        {**TAGS, "workbench:ssh_user": "admin", "workbench:host_key": "generated"}, "i-1"
    )
    assert conn["ansible_ssh_private_key_file"] == str(tmp_path / "wyvern/exp1/id_ed25519")
    assert conn["ansible_user"] == "admin"
    assert conn["ansible_python_interpreter"] == "/usr/bin/python3"
    assert "StrictHostKeyChecking=yes" in conn["ansible_ssh_common_args"]
    assert "HostKeyAlias=wyvern-exp1-me" in conn["ansible_ssh_common_args"]


@pytest.mark.parametrize("name", ["", "a/b", ".."])
def test_config_dir_refuses_a_name_that_is_not_one_directory(name: str) -> None:
    with pytest.raises(AnsibleFilterError, match="cannot name a directory"):
        filters.ec2_gpu_instance_config_dir(name)


# As roles/ec2_gpu_instance/vars/main.yml orders them: first match wins.
USERS = {"ubuntu": "ubuntu", "debian": "admin", "amzn": "ec2-user", "al2023": "ec2-user"}


@pytest.mark.parametrize(
    ("ami_name", "user"),
    [
        ("Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) 20250601", "ubuntu"),
        ("ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20250601", "ubuntu"),
        ("debian-12-amd64-20250601-2130", "admin"),
        ("al2023-ami-2023.7.20250601.0-kernel-6.1-x86_64", "ec2-user"),
        ("my-golden-image", ""),
        (None, ""),
    ],
)
def test_ami_login_user_comes_from_the_image_name(ami_name, user: str) -> None:
    assert filters.ec2_ami_login_user(ami_name, USERS) == user


def test_ami_login_user_given_wins_over_the_name() -> None:
    assert filters.ec2_ami_login_user("debian-12", USERS, "root") == "root"


def test_gpu_summary_counts_each_model() -> None:
    info = {"gpus": [{"name": "T4", "count": 1}, {"name": "A10G", "count": 4}]}
    assert filters.ec2_gpu_summary(info) == "1 x T4, 4 x A10G"
    assert filters.ec2_gpu_summary({}) == "none"
    assert filters.ec2_gpu_summary(None) == "none"


INSTANCES = [
    {
        "instance_id": "i-1",
        "instance_type": "g4dn.xlarge",
        "launch_time": "2026-01-01T10:00:00+00:00",
    },
    {"instance_id": "i-2", "instance_type": "x9.huge", "launch_time": "2026-01-01T11:00:00+00:00"},
]


def test_teardown_receipt_prices_each_instance_it_knows() -> None:
    receipt = filters.ec2_teardown_receipt(
        INSTANCES, {"g4dn.xlarge": 0.526}, "table, 2025-06-01", now="2026-01-01T12:30:00Z"
    )
    assert [r["instance_id"] for r in receipt] == ["i-1", "i-2"]
    assert receipt[0]["estimated_cost"] == 1.315 and receipt[0]["uptime"] == "2h 30m 00s"
    assert receipt[1]["estimated_cost"] is None and receipt[1]["uptime"] == "1h 30m 00s"
    assert receipt[0]["price_source"] == "table, 2025-06-01"
    assert filters.ec2_teardown_receipt([], {}, "x") == []


def test_receipt_text_says_what_each_instance_cost() -> None:
    receipt = filters.ec2_teardown_receipt(
        INSTANCES, {"g4dn.xlarge": 0.526}, "table, 2025-06-01", now="2026-01-01T12:30:00Z"
    )
    assert filters.ec2_receipt_text(receipt, "exp1") == (
        "i-1 (g4dn.xlarge) ran 2h 30m 00s: about 1.315 USD at 0.526 USD/hour (table, 2025-06-01)."
        " i-2 (x9.huge) ran 1h 30m 00s: cost unknown (no price for this type)."
    )


def test_receipt_text_says_when_nothing_ran() -> None:
    assert filters.ec2_receipt_text([], "exp1") == "Nothing was running for workbench exp1."


def _stop_instance(instance_id: str, state: str) -> dict:
    return {
        "instance_id": instance_id,
        "instance_type": "g4dn.xlarge",
        "launch_time": "2026-01-01T10:00:00+00:00",
        "state": {"name": state},
    }


def _volume(instance_id: str, size: int, kind: str = "gp3") -> dict:
    return {"id": f"vol-{instance_id}", "size": size, "type": kind,
            "attachment_set": [{"instance_id": instance_id, "status": "attached"}]}  # fmt: skip


STOP_PRICES = {"gp3": 0.08, "gp2": 0.10}


def test_stop_receipt_prices_the_run_it_ends_and_the_volume_it_keeps() -> None:
    (line,) = filters.ec2_stop_receipt(
        [_stop_instance("i-1", "running")],
        [_volume("i-1", 64), _volume("i-other", 500)],
        {"g4dn.xlarge": 0.526},
        "price table",
        STOP_PRICES,
        "EBS table",
        now="2026-01-01T12:30:00Z",
    )
    assert line["was_running"] is True
    assert (line["uptime"], line["estimated_cost"]) == ("2h 30m 00s", 1.315)
    # Only the instance's own volume: 64 GB of gp3 at 0.08 USD per GB-month.
    assert (line["volume_gb"], line["volume_monthly_cost"]) == (64, 5.12)
    text = filters.ec2_stop_receipt_text([line], "exp1")
    assert "i-1 (g4dn.xlarge) stopped after 2h 30m 00s up since its last start" in text
    assert "about 1.315 USD at 0.526 USD/hour (price table)" in text
    assert "64 GB of gp3 volume (image, data, outputs) is kept" in text
    assert "about 5.12 USD/month (0.08 USD per GB-month of gp3; EBS table)" in text


def test_stop_receipt_of_a_stopped_instance_bills_no_run_but_still_the_volume() -> None:
    (line,) = filters.ec2_stop_receipt(
        [_stop_instance("i-1", "stopped")],
        [_volume("i-1", 100, "gp2")],
        {"g4dn.xlarge": 0.526},
        "price table",
        STOP_PRICES,
        "EBS table",
    )
    assert line["estimated_cost"] is None and line["uptime_seconds"] == 0
    text = filters.ec2_stop_receipt_text([line], "exp1")
    assert text.startswith("i-1 (g4dn.xlarge) was stopped already.")
    assert "100 GB of gp2" in text and "about 10.0 USD/month" in text


def test_stop_receipt_says_unknown_for_a_volume_type_without_a_price() -> None:
    (line,) = filters.ec2_stop_receipt(
        [_stop_instance("i-1", "running")],
        [_volume("i-1", 64), _volume("i-1", 10, "io2")],
        {},
        "price table",
        STOP_PRICES,
        "EBS table",
        now="2026-01-01T11:00:00Z",
    )
    assert line["volume_gb"] == 74 and line["volume_monthly_cost"] is None
    text = filters.ec2_stop_receipt_text([line], "exp1")
    assert "cost unknown (no price for this type)" in text
    assert "cost unknown (no price for its volume type)" in text


def test_stop_receipt_text_says_when_there_is_nothing_to_stop() -> None:
    assert filters.ec2_stop_receipt_text([], "exp1") == "No instance of workbench exp1 to stop."


def test_ssh_config_entry_follows_the_address_and_keeps_the_host_key_alias() -> None:
    # A started instance has a new address: the entry changes only its HostName, and the host
    # key is still looked up under the instance's name, so known_hosts needs no rewrite.
    before = _options(filters.ssh_config_entry(**ENTRY))
    after = _options(filters.ssh_config_entry(**{**ENTRY, "host_name": "198.51.100.20"}))
    assert after["HostName"] == "198.51.100.20"
    assert {k: v for k, v in after.items() if k != "HostName"} == {
        k: v for k, v in before.items() if k != "HostName"
    }
    assert after["HostKeyAlias"] == "wyvern-exp1-me"
