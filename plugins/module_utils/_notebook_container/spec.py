# Copyright: Wyvern workbench team
# Apache-2.0
"""The container as data: options and ``docker inspect`` -> desired and observed spec,
drift and the plan. Pure: no Docker, no files, no network; check mode stops here.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.wyvern.workbench.plugins.module_utils._gpu import resolve_auto
from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_container.common import (
    HIDDEN,
    NotebookError,
)

CONTAINER_PORT = 8888
# Containers made by earlier versions had the token in this variable; it is masked in
# diffs and its presence is drift, so such a container is recreated without it.
TOKEN_ENV = "JUPYTER_TOKEN"
# The container gets the token as a read-only file, named by this variable (Jupyter
# reads it once at start); never in its environment.
TOKEN_FILE_ENV = "JUPYTER_TOKEN_FILE"
TOKEN_IN_CONTAINER = "/run/secrets/jupyter_token"
# A SHA-256 of the token, so a changed token is drift (recreate) without the token being
# in `docker inspect`. Whoever can inspect containers can also read the mounted file.
TOKEN_DIGEST_LABEL = "io.wyvern.workbench.token-sha256"
# Read by the image's jupyter_server_config.py: "1" turns allow_remote_access on (only
# with allow_public_bind, where browsers send a non-local Host header).
REMOTE_ACCESS_ENV = "WYVERN_ALLOW_REMOTE_ACCESS"
IMAGE_ID_ENV = "WORKBENCH_IMAGE_ID"
# `network: host`: the container shares the host's network stack (a node of a workbench
# spanning machines: torchrun's rendezvous and NCCL/gloo reach it at the host's address).
# Nothing is published then; Jupyter itself listens on bind_address:port, read by the
# image's jupyter_server_config.py from these two variables.
HOST_NETWORK = "host"
JUPYTER_IP_ENV = "WYVERN_JUPYTER_IP"
JUPYTER_PORT_ENV = "WYVERN_JUPYTER_PORT"
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
# On every network this module creates (the workbench that made it).
NETWORK_LABEL = "io.wyvern.workbench.notebook"
# Without a port, the first free one from here up (and kept in port_file).
PORT_SEARCH_START = 8888
PORT_SEARCH_COUNT = 100


def token_mount_path(token_file: str) -> str:
    """The copy of the token that the container mounts read-only."""
    return os.path.join(f"{token_file}.d", "jupyter_token")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def check_bind_address(address: str, allow_public_bind: bool) -> str | None:
    """Refuse a non-loopback bind address without the opt-in; return a warning with it."""
    if is_loopback(address):
        return None
    reach = "every network this host is on" if address in ("0.0.0.0", "::", "") else address
    if not allow_public_bind:
        raise NotebookError(
            f"bind_address {address!r} would publish Jupyter on {reach}, guarded by its token "
            "alone; keep 127.0.0.1 and reach it through SSH, or set allow_public_bind: true "
            "(notebook_allow_public_bind in the role) to mean it"
        )
    return (
        f"Jupyter is published on {reach} ({address}), guarded by its token alone, and its "
        "Host-header check against DNS rebinding is off; make sure a firewall limits who "
        "reaches this port"
    )


def published_port(attrs: dict[str, Any] | None) -> int | None:
    """The host port the container's Jupyter answers on: the one published, or on the
    host's network the one Jupyter was told to listen on."""
    if ((attrs or {}).get("HostConfig") or {}).get("NetworkMode") == HOST_NETWORK:
        port = _env_list_to_dict(((attrs or {}).get("Config") or {}).get("Env")).get(
            JUPYTER_PORT_ENV, ""
        )
        return int(port) if port.isdigit() else None
    bindings = ((attrs or {}).get("HostConfig") or {}).get("PortBindings") or {}
    for binding in bindings.get(f"{CONTAINER_PORT}/tcp") or []:
        if str(binding.get("HostPort") or "").isdigit():
            return int(binding["HostPort"])
    return None


def choose_port(
    recorded: int | None,
    current: int | None,
    taken: set[int],
    is_free: Callable[[int], bool],
    start: int = PORT_SEARCH_START,
    count: int = PORT_SEARCH_COUNT,
) -> int:
    """The port a workbench keeps: the recorded one, else the one its container already
    publishes, else the first port from ``start`` that no other container publishes and
    nothing listens on."""
    if recorded:
        return recorded
    if current:
        return current
    for port in range(start, start + count):
        if port not in taken and is_free(port):
            return port
    raise NotebookError(
        f"no free port in {start}-{start + count - 1} for Jupyter; set port to a free one"
    )


def resolve_gpus(gpus: str, gpu_present: bool) -> str:
    """``auto`` -> ``all`` on a GPU host, else ``none``; counts stay as strings."""
    value = resolve_auto(gpus, gpu_present, "all", "none")
    if value in ("all", "none"):
        return value
    if value.isdigit():
        return "none" if int(value) == 0 else value
    raise NotebookError(
        f"gpus must be auto, all, none or a count, not {gpus!r}; fix the gpus option"
    )


def parse_volume(volume: str) -> str:
    """``host:container[:mode]`` -> normalised bind string with an explicit mode."""
    parts = volume.split(":")
    if len(parts) == 2:
        parts.append("rw")
    if len(parts) != 3 or not parts[0].startswith("/") or not parts[1].startswith("/"):
        raise NotebookError(
            f"volume {volume!r} is not HOST_PATH:CONTAINER_PATH[:ro|rw] with absolute paths; fix volumes"
        )
    if parts[2] not in ("ro", "rw"):
        raise NotebookError(f"volume {volume!r} has mode {parts[2]!r}; use ro or rw")
    return f"{os.path.normpath(parts[0])}:{os.path.normpath(parts[1])}:{parts[2]}"


def parse_extra_hosts(extra_hosts: dict[str, Any] | None) -> list[str]:
    """``{name: address}`` -> sorted ``name:address`` entries of the container's /etc/hosts."""
    entries = []
    for name, address in (extra_hosts or {}).items():
        if not _HOSTNAME.match(str(name)):
            raise NotebookError(f"extra_hosts: {name!r} is not a host name; fix extra_hosts")
        try:
            ip = ipaddress.ip_address(str(address))
        except ValueError:
            raise NotebookError(
                f"extra_hosts: {name} -> {address!r} is not an IP address; fix extra_hosts"
            ) from None
        entries.append(f"{name}:{ip}")
    return sorted(entries)


def parse_size(size: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([bkmgt]?)b?\s*", str(size).lower())
    if not match:
        raise NotebookError(f"shm_size {size!r} is not a size like 2g or 512m; fix shm_size")
    scale = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
    return int(match.group(1)) * scale[match.group(2)]


def _env_list_to_dict(items: list[str] | None) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in items or []:
        key, _, value = item.partition("=")
        result[key] = value
    return result


def desired_spec(params: dict[str, Any], image_id: str, token: str, gpus: str) -> dict[str, Any]:
    """What the container must look like, in the same shape as ``observed_spec``."""
    env = {str(k): str(v) for k, v in (params.get("env") or {}).items()}
    if TOKEN_ENV in env:
        raise NotebookError(
            f"env must not set {TOKEN_ENV}: the token goes to the container as a file; "
            "pass it as token (or put it in token_file) instead"
        )
    env[TOKEN_FILE_ENV] = TOKEN_IN_CONTAINER
    env[IMAGE_ID_ENV] = image_id
    if not is_loopback(params["bind_address"]):
        env[REMOTE_ACCESS_ENV] = "1"
    labels = {str(k): str(v) for k, v in (params.get("labels") or {}).items()}
    labels[TOKEN_DIGEST_LABEL] = token_digest(token)
    network = params.get("network") or network_name(params["name"])
    if network == HOST_NETWORK:
        if params.get("network_aliases"):
            raise NotebookError(
                "network_aliases: a container on the host's network has the host's names "
                "only; drop network_aliases, or name its peers with extra_hosts"
            )
        env[JUPYTER_IP_ENV] = params["bind_address"]
        env[JUPYTER_PORT_ENV] = str(params["port"])
    mounts = [parse_volume(v) for v in params.get("volumes") or []]
    mounts.append(f"{token_mount_path(params['token_file'])}:{TOKEN_IN_CONTAINER}:ro")
    return {
        "image": image_id,
        "env": env,
        "ports": f"{params['bind_address']}:{params['port']}",
        "gpus": gpus,
        "mounts": sorted(mounts),
        "labels": labels,
        "shm_size": parse_size(params["shm_size"]),
        "user": str(params["user"]),
        "restart_policy": params["restart_policy"],
        "init": True,
        "network": network,
        "aliases": sorted(set(params.get("network_aliases") or [])),
        "extra_hosts": parse_extra_hosts(params.get("extra_hosts")),
    }


def network_name(name: str) -> str:
    """The container's own bridge network, without inter-container traffic."""
    return f"{name}-net"


def observed_aliases(attrs: dict[str, Any]) -> list[str]:
    """The names given to the container on its network (not the ones Docker adds itself:
    its name and short id)."""
    network = (attrs.get("HostConfig") or {}).get("NetworkMode") or ""
    endpoint = ((attrs.get("NetworkSettings") or {}).get("Networks") or {}).get(network) or {}
    own = {str(attrs.get("Id") or "")[:12], str(attrs.get("Name") or "").lstrip("/")}
    return sorted({a for a in endpoint.get("Aliases") or [] if a not in own})


def observed_spec(attrs: dict[str, Any], image_attrs: dict[str, Any]) -> dict[str, Any]:
    """The managed part of ``docker inspect``: values the image itself sets are left out,
    so env and labels compare what this module asked for and nothing else."""
    config = attrs.get("Config") or {}
    host = attrs.get("HostConfig") or {}
    image_config = image_attrs.get("Config") or {}
    image_env = _env_list_to_dict(image_config.get("Env"))
    env = {k: v for k, v in _env_list_to_dict(config.get("Env")).items() if image_env.get(k) != v}
    image_labels = image_config.get("Labels") or {}
    labels = {k: v for k, v in (config.get("Labels") or {}).items() if image_labels.get(k) != v}
    bindings = (host.get("PortBindings") or {}).get(f"{CONTAINER_PORT}/tcp") or [{}]
    ports = f"{bindings[0].get('HostIp') or '0.0.0.0'}:{bindings[0].get('HostPort', '')}"
    if host.get("NetworkMode") == HOST_NETWORK:
        own = _env_list_to_dict(config.get("Env"))
        ports = f"{own.get(JUPYTER_IP_ENV, '')}:{own.get(JUPYTER_PORT_ENV, '')}"
    gpus = "none"
    for request in host.get("DeviceRequests") or []:
        if ["gpu"] in (request.get("Capabilities") or []):
            count = request.get("Count", 0)
            gpus = "all" if count == -1 else str(count)
    mounts = []
    for bind in host.get("Binds") or []:
        try:
            mounts.append(parse_volume(bind))
        except NotebookError:
            mounts.append(bind)
    return {
        "image": attrs.get("Image"),
        "env": env,
        "ports": ports,
        "gpus": gpus,
        "mounts": sorted(mounts),
        "labels": labels,
        "shm_size": host.get("ShmSize"),
        "user": config.get("User") or "",
        "restart_policy": (host.get("RestartPolicy") or {}).get("Name") or "no",
        "init": bool(host.get("Init")),
        "network": host.get("NetworkMode") or "default",
        "aliases": observed_aliases(attrs),
        "extra_hosts": sorted(host.get("ExtraHosts") or []),
    }


def _without_image_defaults(spec: dict[str, Any], image_attrs: dict[str, Any]) -> dict[str, Any]:
    image_config = image_attrs.get("Config") or {}
    image_env = _env_list_to_dict(image_config.get("Env"))
    image_labels = image_config.get("Labels") or {}
    result = dict(spec)
    result["env"] = {k: v for k, v in spec["env"].items() if image_env.get(k) != v}
    result["labels"] = {k: v for k, v in spec["labels"].items() if image_labels.get(k) != v}
    return result


def _mask(spec: dict[str, Any]) -> dict[str, Any]:
    masked = dict(spec)
    masked["env"] = {k: (HIDDEN if k == TOKEN_ENV else v) for k, v in spec["env"].items()}
    return masked


def spec_diff(observed: dict[str, Any], desired: dict[str, Any]) -> list[str]:
    """Names of the settings that differ (``env`` counts a changed token, shown masked)."""
    return [key for key in desired if observed.get(key) != desired[key]]


# ---------------------------------------------------------------- plan


@dataclass
class Plan:
    actions: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.actions)


def plan(
    state: str,
    container: dict[str, Any] | None,
    desired: dict[str, Any] | None,
    image_attrs: dict[str, Any] | None,
) -> Plan:
    """Decide the actions from the current container (inspect data or None)."""
    result = Plan()
    running = bool(container and (container.get("State") or {}).get("Running"))
    if container is None:
        result.before = {"state": "absent"}
    else:
        result.before = {"state": "running" if running else "stopped"}

    if state == "absent":
        result.after = {"state": "absent"}
        if container is not None:
            result.actions.append("remove")
        return result
    if state == "stopped":
        result.after = {"state": "stopped" if container is not None else "absent"}
        if running:
            result.actions.append("stop")
        return result

    assert desired is not None and image_attrs is not None
    want = _without_image_defaults(desired, image_attrs)
    result.after = {"state": "running", **_mask(want)}
    if container is None:
        result.actions += ["create", "start"]
        return result
    have = observed_spec(container, image_attrs)
    result.before.update(_mask(have))
    result.drift = spec_diff(have, want)
    if result.drift:
        result.actions += ["remove", "create", "start"]
    elif not running:
        result.actions.append("start")
    return result
