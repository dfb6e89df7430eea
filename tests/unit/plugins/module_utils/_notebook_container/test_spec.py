"""The pure layer: desired and observed spec, drift, the plan, bind address and port choice."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_container import (
    common,
    engine,
    spec,
)

from .helpers import (
    IMAGE_ATTRS,
    IMAGE_ID,
    desired,
    inspect_of,
    params,
)

TOKEN = "s3cr3t-" + "x" * 36


def test_matching_container_needs_no_action() -> None:
    want = desired()
    result = spec.plan("started", inspect_of(want), want, IMAGE_ATTRS)
    assert result.actions == []
    assert result.drift == []
    assert not result.changed


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"image": "sha256:" + "b" * 64}, "image"),
        ({"env": {"EXTRA": "2"}}, "env"),
        ({"ports": "127.0.0.1:9999"}, "ports"),
        ({"gpus": "all"}, "gpus"),
        ({"mounts": ["/elsewhere:/workspace/outputs:rw"]}, "mounts"),
        ({"labels": {"io.wyvern.workbench.name": "other"}}, "labels"),
        ({"shm_size": 64 * 1024 * 1024}, "shm_size"),
        ({"restart_policy": "no"}, "restart_policy"),
        ({"init": False}, "init"),
        ({"network": "bridge"}, "network"),
    ],
)
def test_drift_recreates_and_names_what_changed(change: dict[str, Any], field: str) -> None:
    want = desired()
    have = inspect_of({**want, **change})
    result = spec.plan("started", have, want, IMAGE_ATTRS)
    assert result.actions == ["remove", "create", "start"]
    assert result.drift == [field]
    assert result.before[field] != result.after[field]


def test_changed_token_is_drift_but_never_shown() -> None:
    want = desired()
    have = inspect_of(desired(token="old-token-value"))
    result = spec.plan("started", have, want, IMAGE_ATTRS)
    assert result.drift == ["labels"]  # the token's digest label
    shown = repr(result.before) + repr(result.after)
    assert "old-token-value" not in shown and "t" * 43 not in shown


def test_a_container_with_the_token_in_its_environment_is_recreated_and_masked() -> None:
    want = desired()
    have = inspect_of(want)
    have["Config"]["Env"].append("JUPYTER_TOKEN=old-token-value")
    result = spec.plan("started", have, want, IMAGE_ATTRS)
    assert result.drift == ["env"]
    assert "old-token-value" not in repr(result.before)
    assert result.before["env"]["JUPYTER_TOKEN"] == common.HIDDEN


def test_values_the_image_sets_are_not_drift() -> None:
    want = desired(env={"LANG": "C.UTF-8"})  # same as the image's own value
    result = spec.plan("started", inspect_of(want), want, IMAGE_ATTRS)
    assert result.actions == []


def test_exited_container_is_started_again() -> None:
    want = desired()
    result = spec.plan("started", inspect_of(want, running=False), want, IMAGE_ATTRS)
    assert result.actions == ["start"]
    assert result.before["state"] == "stopped"


def test_missing_container_is_created() -> None:
    want = desired()
    assert spec.plan("started", None, want, IMAGE_ATTRS).actions == ["create", "start"]


@pytest.mark.parametrize(
    ("state", "running", "actions"),
    [
        ("absent", True, ["remove"]),
        ("absent", None, []),
        ("stopped", True, ["stop"]),
        ("stopped", False, []),
    ],
)
def test_absent_and_stopped(state: str, running: bool | None, actions: list[str]) -> None:
    container = None if running is None else inspect_of(desired(), running=running)
    assert spec.plan(state, container, None, None).actions == actions


def test_gpu_resolution() -> None:
    assert spec.resolve_gpus("auto", True) == "all"
    assert spec.resolve_gpus("auto", False) == "none"
    assert spec.resolve_gpus("2", False) == "2"
    assert spec.resolve_gpus("0", True) == "none"
    with pytest.raises(common.NotebookError, match="gpus must be auto, all, none or a count"):
        spec.resolve_gpus("many", True)
    (request,) = engine.device_requests("all")
    assert request["Count"] == -1 and request["Capabilities"] == [["gpu"]]
    assert engine.device_requests("none") == []


def test_bad_volume_and_size_fail_with_the_option_name() -> None:
    with pytest.raises(common.NotebookError, match="fix volumes"):
        spec.parse_volume("relative:/x")
    with pytest.raises(common.NotebookError, match="fix shm_size"):
        spec.parse_size("lots")
    assert spec.parse_size("512m") == 512 * 1024**2


def hardened_spec(**over: Any) -> dict[str, Any]:
    p = params(token=TOKEN, **over)
    return spec.desired_spec(p, IMAGE_ID, TOKEN, "none")


def test_the_token_is_a_read_only_mount_never_an_environment_variable() -> None:
    want = hardened_spec()
    assert TOKEN not in repr(want)
    assert want["env"]["JUPYTER_TOKEN_FILE"] == "/run/secrets/jupyter_token"
    assert "JUPYTER_TOKEN" not in want["env"]
    assert "/nonexistent/token.d/jupyter_token:/run/secrets/jupyter_token:ro" in want["mounts"]
    assert want["labels"][spec.TOKEN_DIGEST_LABEL] == spec.token_digest(TOKEN) != TOKEN


def test_env_cannot_bring_the_token_back() -> None:
    with pytest.raises(common.NotebookError, match="env must not set JUPYTER_TOKEN"):
        hardened_spec(env={"JUPYTER_TOKEN": TOKEN})


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_needs_no_opt_in(address: str) -> None:
    assert spec.check_bind_address(address, False) is None
    assert "WYVERN_ALLOW_REMOTE_ACCESS" not in hardened_spec(bind_address=address)["env"]


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "10.0.0.5"])
def test_a_public_bind_needs_the_opt_in(address: str) -> None:
    with pytest.raises(common.NotebookError) as refused:
        spec.check_bind_address(address, False)
    assert "allow_public_bind: true" in str(refused.value)
    assert "notebook_allow_public_bind" in str(refused.value)
    warning = spec.check_bind_address(address, True)
    assert warning and "token alone" in warning and "DNS rebinding" in warning
    # Browsers elsewhere send the host's address as Host: Jupyter must accept it then.
    assert (
        hardened_spec(bind_address=address, allow_public_bind=True)["env"][
            "WYVERN_ALLOW_REMOTE_ACCESS"
        ]
        == "1"
    )


def test_choose_port_keeps_the_recorded_then_the_published_port() -> None:
    never = mock.Mock(side_effect=AssertionError("no search"))
    assert spec.choose_port(9001, 9002, set(), never) == 9001
    assert spec.choose_port(None, 9002, set(), never) == 9002


def test_choose_port_skips_ports_other_containers_publish_or_something_listens_on() -> None:
    busy = {8889}
    assert spec.choose_port(None, None, {8888}, lambda p: p not in busy) == 8890
    with pytest.raises(
        common.NotebookError, match="no free port in 8888-8987 for Jupyter; set port"
    ):
        spec.choose_port(None, None, set(), lambda p: False)


# ---------------------------------------------------------------- the host's network


def test_on_the_hosts_network_jupyter_listens_on_the_loopback_port_itself() -> None:
    want = desired(network="host", port=18999)
    assert want["network"] == "host"
    assert want["env"][spec.JUPYTER_IP_ENV] == "127.0.0.1"
    assert want["env"][spec.JUPYTER_PORT_ENV] == "18999"
    seen = inspect_of(want)
    assert spec.published_port(seen) == 18999
    assert spec.plan("started", seen, want, IMAGE_ATTRS).actions == []  # a rerun: no change


def test_on_the_hosts_network_a_new_port_or_address_is_drift() -> None:
    seen = inspect_of(desired(network="host", port=18999))
    result = spec.plan("started", seen, desired(network="host", port=19000), IMAGE_ATTRS)
    assert result.actions == ["remove", "create", "start"]
    assert {"env", "ports"} <= set(result.drift)
    moved = spec.plan("started", inspect_of(desired()), desired(network="host"), IMAGE_ATTRS)
    assert "network" in moved.drift


def test_the_hosts_network_takes_no_aliases() -> None:
    with pytest.raises(common.NotebookError, match="network_aliases: a container on the host"):
        desired(network="host", network_aliases=["node-000"])


def test_extra_hosts_are_checked_sorted_and_drift_when_changed() -> None:
    want = desired(extra_hosts={"node-001": "10.0.1.7", "node-000": "10.0.1.5"})
    assert want["extra_hosts"] == ["node-000:10.0.1.5", "node-001:10.0.1.7"]
    seen = inspect_of(want)
    assert spec.plan("started", seen, want, IMAGE_ATTRS).actions == []
    other = desired(extra_hosts={"node-000": "10.0.1.5", "node-001": "10.0.1.8"})
    assert spec.plan("started", seen, other, IMAGE_ATTRS).drift == ["extra_hosts"]
    for bad, wanted in (
        ({"node 1": "10.0.0.1"}, "'node 1' is not a host name"),
        ({"node-001": "10.0.0.300"}, "node-001 -> '10.0.0.300' is not an IP address"),
        ({"node-001": "$(reboot)"}, "is not an IP address"),
    ):
        with pytest.raises(common.NotebookError, match=wanted.replace("(", r"\(")):
            desired(extra_hosts=bad)


def test_a_container_on_the_hosts_network_is_created_without_published_ports() -> None:
    client = mock.MagicMock()
    want = desired(network="host", extra_hosts={"node-000": "10.0.1.5"})
    engine.create_container(client, "nb", want, "127.0.0.1", 18888)
    kwargs = client.containers.create.call_args.kwargs
    assert kwargs["network_mode"] == "host"
    assert "ports" not in kwargs and "network" not in kwargs
    assert kwargs["extra_hosts"] == {"node-000": "10.0.1.5"}
    # On its own bridge it is published as ever.
    engine.create_container(client, "nb", desired(), "127.0.0.1", 18888)
    kwargs = client.containers.create.call_args.kwargs
    assert kwargs["ports"] == {"8888/tcp": ("127.0.0.1", 18888)} and "network_mode" not in kwargs
