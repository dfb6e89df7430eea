# Copyright: Wyvern workbench team
# Apache-2.0
"""Plan, apply and health-check the notebook container (private to wyvern.workbench).

The flow is pure where it can be: ``desired_spec`` and ``observed_spec`` turn options and
``docker inspect`` data into flat dicts, ``spec_diff`` compares them, ``plan`` decides the
actions. Only ``NotebookContainer.apply`` and ``wait_healthy`` touch the daemon, so check
mode stops before them. Domain errors are ``NotebookError`` (one line: reason and fix);
the module turns them into ``fail_json`` in one place.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import secrets
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# The GPU rule has one home (_gpu.py); its names are re-exported here for the module.
from ansible_collections.wyvern.workbench.plugins.module_utils._gpu import (  # noqa: F401
    PROBE_SCRIPT,
    diagnose_gpu,
    host_driver_version,
    host_has_nvidia_gpu,
    min_driver_for_cuda,
    resolve_auto,
)

try:
    import docker
    from docker.errors import APIError, DockerException, ImageNotFound, NotFound
    from docker.types import DeviceRequest

    HAS_DOCKER = True
    DOCKER_IMPORT_ERROR: Exception | None = None
except ImportError as exc:  # pragma: no cover - exercised through missing_required_lib
    HAS_DOCKER = False
    DOCKER_IMPORT_ERROR = exc

    class DockerException(Exception):  # type: ignore[no-redef]
        pass

    class APIError(DockerException):  # type: ignore[no-redef]
        pass

    class NotFound(DockerException):  # type: ignore[no-redef]
        pass

    class ImageNotFound(NotFound):  # type: ignore[no-redef]
        pass


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
# Without a port, the first free one from here up (and kept in port_file).
PORT_SEARCH_START = 8888
PORT_SEARCH_COUNT = 100
# Seconds a restarted container gets to answer before the restart counts as a crash loop
# (a crash-looping one is usually seen in its `restarting` state well before).
CRASH_GRACE = 5.0
LOG_LINES = 50
HIDDEN = "********"


class NotebookError(Exception):
    """A failure the user can act on: ``str()`` is one line, reason then fix."""

    def __init__(self, message: str, logs: list[str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.logs = logs
        self.extra = extra


# ---------------------------------------------------------------- host facts


# ---------------------------------------------------------------- token


def ensure_token(token: str | None, token_file: str, check_mode: bool) -> tuple[str, bool]:
    """Return (token, changed). An explicit token is written to the file too, so
    tools that read the file (tunnel, run) always see the live one."""
    current = None
    if os.path.exists(token_file):
        with open(token_file, encoding="utf-8") as handle:
            current = handle.read().strip() or None
    wanted = token or current or secrets.token_urlsafe(32)
    mode_ok = current is None or (os.stat(token_file).st_mode & 0o777) == 0o600
    if wanted == current and mode_ok:
        return wanted, False
    if not check_mode:
        directory = os.path.dirname(os.path.abspath(token_file))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(wanted + "\n")
        os.chmod(token_file, 0o600)
    return wanted, True


def token_mount_path(token_file: str) -> str:
    """The copy of the token that the container mounts read-only."""
    return os.path.join(f"{token_file}.d", "jupyter_token")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def ensure_token_mount(token: str, token_file: str, check_mode: bool) -> bool:
    """Make the container's copy of the token; True when it had to be (re)written.

    The file is 0444 inside a 0700 directory of the module's user (root on a managed
    host): the container's user reads it through the bind mount, host accounts (even
    the one whose uid equals the container user's) cannot reach it. It is written in
    place, without a newline (Jupyter does not strip it), so a running container's bind
    mount keeps seeing it.
    """
    path = token_mount_path(token_file)
    directory = os.path.dirname(path)
    try:
        with open(path, encoding="utf-8") as handle:
            current: str | None = handle.read()
        modes_ok = (os.stat(directory).st_mode & 0o777) == 0o700 and (
            os.stat(path).st_mode & 0o777
        ) == 0o444
    except OSError:
        current, modes_ok = None, False
    if current == token and modes_ok:
        return False
    if not check_mode:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        if os.path.exists(path):
            os.chmod(path, 0o600)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(token)
        os.chmod(path, 0o444)
    return True


def remove_token_mount(token_file: str) -> None:
    path = token_mount_path(token_file)
    if os.path.exists(path):
        os.chmod(path, 0o600)
        os.unlink(path)
    if os.path.isdir(os.path.dirname(path)) and not os.listdir(os.path.dirname(path)):
        os.rmdir(os.path.dirname(path))


# ---------------------------------------------------------------- bind address and port


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
    bindings = ((attrs or {}).get("HostConfig") or {}).get("PortBindings") or {}
    for binding in bindings.get(f"{CONTAINER_PORT}/tcp") or []:
        if str(binding.get("HostPort") or "").isdigit():
            return int(binding["HostPort"])
    return None


def read_port_file(port_file: str | None) -> int | None:
    if not port_file:
        return None
    try:
        with open(port_file, encoding="ascii") as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and 1 <= int(text) <= 65535 else None


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


def port_is_free(address: str, port: int) -> bool:
    host = "0.0.0.0" if address in ("", "::") else address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# ---------------------------------------------------------------- spec


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


def device_requests(gpus: str) -> list[Any]:
    if gpus == "none":
        return []
    count = -1 if gpus == "all" else int(gpus)
    return [DeviceRequest(count=count, capabilities=[["gpu"]])]


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
        "network": network_name(params["name"]),
    }


def network_name(name: str) -> str:
    """The container's own bridge network, without inter-container traffic."""
    return f"{name}-net"


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


# ---------------------------------------------------------------- health


def jupyter_status(url: str, token: str, timeout: float = 2.0) -> int | None:
    """HTTP status of Jupyter's REST API, or None when nothing answers yet."""
    request = urllib.request.Request(
        f"{url}/api/status", headers={"Authorization": f"token {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, ValueError):
        return None


@dataclass
class ContainerState:
    """What ``docker inspect`` says about a starting container."""

    status: str
    restart_count: int = 0
    exit_code: int | None = None
    oom_killed: bool = False
    error: str = ""

    @classmethod
    def of(cls, attrs: dict[str, Any]) -> ContainerState:
        state = attrs.get("State") or {}
        return cls(
            status=str(state.get("Status") or "unknown"),
            restart_count=int(attrs.get("RestartCount") or 0),
            exit_code=state.get("ExitCode"),
            oom_killed=bool(state.get("OOMKilled")),
            error=str(state.get("Error") or ""),
        )


def exit_hint(state: ContainerState) -> str:
    """What an exit code usually means for a container's command."""
    if state.oom_killed or state.exit_code == 137:
        return "killed for memory (OOMKilled) or by SIGKILL; give it more memory"
    if state.exit_code == 127:
        return "command not found; the image lacks jupyter on PATH, rebuild it"
    if state.exit_code == 126:
        return "command not executable; fix the image's command"
    return "read the logs below and fix the image or its command"


class CrashLoop(NotebookError):
    """The container keeps crashing and Docker keeps restarting it."""


def wait_healthy(
    url: str,
    token: str,
    container_state: Callable[[], ContainerState],
    timeout: float,
    interval: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    status: Callable[[str, str], int | None] = jupyter_status,
    restarts_before: int = 0,
) -> float:
    """Poll until Jupyter answers 200 with the token; seconds waited.

    Fails fast when the container leaves the running state, when Docker restarts it (a
    crash loop under a restart policy: the state is ``restarting``, which shows the exit
    code, or the restart count grew past ``restarts_before`` and Jupyter still does not
    answer ``CRASH_GRACE`` seconds later), and after ``timeout``.
    """
    start = clock()
    deadline = start + timeout
    last = None
    restarted_at = None
    while True:
        last = status(url, token)
        if last == 200:
            return clock() - start
        state = container_state()
        restarts = state.restart_count - restarts_before
        if restarts > 0 and restarted_at is None:
            restarted_at = clock()
        if state.status == "restarting" or (
            restarted_at is not None and clock() - restarted_at >= CRASH_GRACE
        ):
            code = "not seen" if state.status != "restarting" else state.exit_code
            raise CrashLoop(
                f"the container crashed during start (exit code {code}) and Docker's restart "
                f"policy restarted it {max(restarts, 1)} time(s): a crash loop, not a slow "
                f"start; {exit_hint(state)}"
            )
        if state.status not in ("running", "created"):
            raise NotebookError(
                f"the container exited during start (state {state.status}, exit code "
                f"{state.exit_code}{', ' + state.error if state.error else ''}); {exit_hint(state)}"
            )
        if last in (401, 403):
            raise NotebookError(
                f"Jupyter at {url} refused the token (HTTP {last}); remove the token file or pass the right token"
            )
        if clock() >= deadline:
            raise NotebookError(
                f"Jupyter at {url} did not answer within {timeout:g}s (last status {last}); "
                "the container is left running: read the logs below, and raise the timeout "
                "if the host is just slow, or remove it with state: absent"
            )
        sleep(interval)


# ---------------------------------------------------------------- the driver


@dataclass
class Result:
    changed: bool
    diff: dict[str, Any]
    actions: list[str]
    url: str | None = None
    container_id: str | None = None
    image_id: str | None = None
    seconds_to_healthy: float | None = None
    started_at: float | None = None
    probe: dict[str, Any] | None = None
    token_file: str | None = None
    gpus: str | None = None
    drift: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class NotebookContainer:
    """Drive one container through the Docker SDK. ``client`` is a ``docker.DockerClient``."""

    def __init__(
        self,
        params: dict[str, Any],
        check_mode: bool,
        client: Any = None,
        gpu_present: Callable[[], bool] = host_has_nvidia_gpu,
        driver_version: Callable[[], str | None] = host_driver_version,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        status: Callable[[str, str], int | None] = jupyter_status,
    ) -> None:
        self.params = params
        self.check_mode = check_mode
        self.client = client
        self.gpu_present = gpu_present
        self.driver_version = driver_version
        self.clock = clock
        self.sleep = sleep
        self.status = status

    # -- daemon access, each wrapped so the message names the fix

    def connect(self) -> None:
        if self.client is not None:
            return
        base_url = self.params.get("docker_host") or None
        try:
            self.client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
            self.client.ping()
        except DockerException as exc:
            where = base_url or os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
            if "Permission denied" in str(exc):
                fix = "run as root (become: true) or as a member of the docker group"
            else:
                fix = "start dockerd on this host, or point docker_host at the daemon that runs"
            raise NotebookError(
                f"cannot reach the Docker daemon at {where} ({exc}); {fix}"
            ) from exc

    def _container(self) -> Any:
        try:
            return self.client.containers.get(self.params["name"])
        except NotFound:
            return None

    def _image(self) -> Any:
        image = self.params.get("image")
        if not image:
            raise NotebookError("state=started needs image; set image to the notebook image tag")
        try:
            return self.client.images.get(image)
        except ImageNotFound as exc:
            raise NotebookError(
                f"image {image} is not on this host; build it first (role wyvern.workbench.notebook) "
                "or fix the image name"
            ) from exc

    def logs(self, container: Any) -> list[str]:
        try:
            text = container.logs(tail=LOG_LINES).decode("utf-8", "replace")
        except (DockerException, AttributeError):
            return []
        token = getattr(self, "_token", None)
        if token:  # a server that prints its URL must not hand the token to the log
            text = text.replace(token, HIDDEN)
        return text.splitlines()[-LOG_LINES:]

    def _url(self) -> str:
        host = self.params["bind_address"]
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.params['port']}"

    # -- the run

    def _network(self) -> Any:
        try:
            return self.client.networks.get(network_name(self.params["name"]))
        except NotFound:
            return None

    def _other_published_ports(self) -> set[int]:
        ports: set[int] = set()
        for other in self.client.containers.list(all=True):
            if other.name != self.params["name"]:
                for bindings in (
                    (other.attrs.get("HostConfig") or {}).get("PortBindings") or {}
                ).values():
                    ports.update(
                        int(b["HostPort"])
                        for b in bindings or []
                        if str(b.get("HostPort") or "").isdigit()
                    )
        return ports

    def resolve_port(self, container: Any) -> bool:
        """Set params["port"] (given, recorded, or chosen); True when port_file changes."""
        port_file = self.params.get("port_file")
        recorded = read_port_file(port_file)
        port = self.params.get("port")
        if not port:
            port = choose_port(
                recorded,
                published_port(container.attrs if container else None),
                self._other_published_ports(),
                lambda candidate: port_is_free(self.params["bind_address"], candidate),
            )
        self.params["port"] = port
        if not port_file or recorded == port:
            return False
        if not self.check_mode:
            os.makedirs(os.path.dirname(os.path.abspath(port_file)), exist_ok=True)
            with open(port_file, "w", encoding="ascii") as handle:
                handle.write(f"{port}\n")
        return True

    def run(self) -> Result:
        state = self.params["state"]
        self.connect()
        container = self._container()
        network = self._network()
        desired = image = None
        extra_changed = False
        gpus = None
        if state == "started":
            image = self._image()
            gpus = resolve_gpus(self.params["gpus"], self.gpu_present())
            token, token_changed = ensure_token(
                self.params.get("token"), self.params["token_file"], self.check_mode
            )
            self._token = token
            mount_changed = ensure_token_mount(token, self.params["token_file"], self.check_mode)
            port_changed = self.resolve_port(container)
            extra_changed = token_changed or mount_changed or port_changed
            desired = desired_spec(self.params, image.id, token, gpus)
        the_plan = plan(
            state, container.attrs if container else None, desired, image.attrs if image else None
        )
        if state == "started" and network is None:
            the_plan.actions.insert(0, "create-network")
        if state == "absent" and network is not None:
            the_plan.actions.append("remove-network")
        result = Result(
            changed=the_plan.changed or extra_changed,
            diff={"before": the_plan.before, "after": the_plan.after},
            actions=the_plan.actions,
            drift=the_plan.drift,
            token_file=self.params["token_file"] if state == "started" else None,
            gpus=gpus,
        )
        if state == "started":
            result.url = self._url()
            result.image_id = image.id
        if container is not None:
            result.container_id = container.id
        if self.check_mode:
            return result

        container = self.apply(the_plan, container, desired)
        if state != "started":
            result.container_id = container.id if container is not None else None
            return result
        result.container_id = container.id
        self.check_health(container, token, result)
        return result

    def apply(self, the_plan: Plan, container: Any, desired: dict[str, Any] | None) -> Any:
        for action in the_plan.actions:
            if action == "create-network":
                self._create_network()
            elif action == "remove-network":
                self._remove_network()
            elif action == "remove":
                container.remove(force=True)
                container = None
            elif action == "stop":
                container.stop()
            elif action == "create":
                container = self._create(desired)
            elif action == "start":
                self._start(container)
        return container

    def _create_network(self) -> None:
        # The container is alone on this bridge, and inter-container traffic is off on it:
        # Docker's isolation rules keep containers on other networks out, so Jupyter is
        # reached through the published port only.
        self.client.networks.create(
            network_name(self.params["name"]),
            driver="bridge",
            options={"com.docker.network.bridge.enable_icc": "false"},
            labels={"io.wyvern.workbench.notebook": self.params["name"]},
        )

    def _remove_network(self) -> None:
        network = self._network()
        if network is None:
            return
        network.reload()
        if network.attrs.get("Containers"):
            return  # something else joined it; leave it rather than break that
        network.remove()

    def _create(self, desired: dict[str, Any]) -> Any:
        try:
            return self.client.containers.create(
                image=desired["image"],
                name=self.params["name"],
                environment=desired["env"],
                init=desired["init"],
                network=desired["network"],
                ports={f"{CONTAINER_PORT}/tcp": (self.params["bind_address"], self.params["port"])},
                device_requests=device_requests(desired["gpus"]),
                volumes=desired["mounts"],
                labels=desired["labels"],
                shm_size=desired["shm_size"],
                user=desired["user"],
                restart_policy={"Name": desired["restart_policy"]},
                detach=True,
            )
        except APIError as exc:
            raise NotebookError(
                f"Docker refused to create {self.params['name']}: {exc.explanation or exc}"
            ) from exc

    def _start(self, container: Any) -> None:
        self._restarts_before = int((container.attrs or {}).get("RestartCount") or 0)
        self._started_at = time.time()
        self._started_clock = self.clock()
        try:
            container.start()
        except APIError as exc:
            text = str(exc.explanation or exc)
            if "port is already allocated" in text or "address already in use" in text:
                container.remove(force=True)
                how = (
                    f"set port to a free one, or delete {self.params['port_file']} to choose another"
                    if self.params.get("port_file")
                    else "set port to a free one"
                )
                raise NotebookError(
                    f"port {self.params['bind_address']}:{self.params['port']} is already taken; "
                    f"stop whatever listens there, or {how}"
                ) from exc
            if "could not select device driver" in text:
                container.remove(force=True)
                raise NotebookError(
                    f"Docker cannot give the container GPUs ({text}); install the NVIDIA container "
                    "toolkit (role wyvern.workbench.nvidia_container_toolkit) or set gpus: none"
                ) from exc
            raise NotebookError(
                f"Docker could not start {self.params['name']}: {text}", logs=self.logs(container)
            ) from exc

    def _state(self, container: Any) -> ContainerState:
        try:
            container.reload()
        except NotFound:
            return ContainerState(status="removed")
        return ContainerState.of(container.attrs)

    def check_health(self, container: Any, token: str, result: Result) -> None:
        started_clock = getattr(self, "_started_clock", None)
        started_at = getattr(self, "_started_at", None)
        # Restarts are counted from the count before this run's start call (or from now,
        # for a container that already ran).
        restarts_before = getattr(self, "_restarts_before", None)
        if restarts_before is None:
            restarts_before = self._state(container).restart_count
        try:
            waited = wait_healthy(
                result.url or self._url(),
                token,
                lambda: self._state(container),
                timeout=self.params["timeout"],
                interval=self.params["interval"],
                clock=self.clock,
                sleep=self.sleep,
                status=self.status,
                restarts_before=restarts_before,
            )
        except CrashLoop as exc:
            logs = self.logs(container)
            container.stop(timeout=5)  # else the restart policy keeps it looping
            raise NotebookError(
                f"{exc}; the container {self.params['name']} is stopped (kept for `docker logs`)",
                logs=logs,
                **result.as_dict(),
            ) from exc
        except NotebookError as exc:
            raise NotebookError(str(exc), logs=self.logs(container), **result.as_dict()) from exc
        # Measured from the start call when this run started the container.
        if started_clock is not None:
            waited = self.clock() - started_clock
        result.seconds_to_healthy = round(waited, 3)
        result.started_at = started_at
        result.probe = self.probe(container, result)
        self.compare_gpu(container, result)

    def probe(self, container: Any, result: Result) -> dict[str, Any]:
        exit_code, output = container.exec_run(
            ["python", "-c", PROBE_SCRIPT], user=self.params["user"]
        )
        text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
        if exit_code != 0:
            raise NotebookError(
                f"the probe inside the container failed (exit {exit_code}): {text.strip().splitlines()[-1:]}; "
                "the image lacks a working torch/torchvision, rebuild it",
                logs=self.logs(container),
                **result.as_dict(),
            )
        return json.loads(text.strip().splitlines()[-1])

    def compare_gpu(self, container: Any, result: Result) -> None:
        expect = resolve_auto(self.params["expect_gpu"], self.gpu_present(), "true", "false")
        expected = expect in ("true", "yes", "1")
        probe = result.probe or {}
        if bool(probe.get("cuda_available")) == expected:
            return
        try:
            runtimes = sorted((self.client.info().get("Runtimes") or {}).keys())
        except DockerException:
            runtimes = []
        message = diagnose_gpu(
            expected, probe, result.gpus or "none", self.driver_version(), runtimes
        )
        raise NotebookError(message, logs=self.logs(container), **result.as_dict())
