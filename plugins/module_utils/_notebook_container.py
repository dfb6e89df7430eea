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

import glob
import json
import os
import re
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
TOKEN_ENV = "JUPYTER_TOKEN"
IMAGE_ID_ENV = "WORKBENCH_IMAGE_ID"
NVIDIA_VENDOR = "0x10de"
LOG_LINES = 50
HIDDEN = "********"

# Minimum Linux driver per CUDA toolkit version (NVIDIA's CUDA release notes, table 3,
# "Toolkit Driver Version"). PyTorch wheels bundle the runtime, so the driver is the
# one thing the host must bring.
CUDA_MIN_DRIVER: dict[str, str] = {
    "11.8": "520.61.05",
    "12.0": "525.60.13",
    "12.1": "530.30.02",
    "12.2": "535.54.03",
    "12.3": "545.23.06",
    "12.4": "550.54.14",
    "12.5": "555.42.02",
    "12.6": "560.28.03",
    "12.8": "570.26",
    "12.9": "575.51.03",
    "13.0": "580.65.06",
}

# Runs inside the container as the notebook user; prints one JSON line.
PROBE_SCRIPT = r"""
import json, torch, torchvision
available = torch.cuda.is_available()
count = torch.cuda.device_count() if available else 0
print(json.dumps({
    "torch": torch.__version__,
    "torchvision": torchvision.__version__,
    "cuda": torch.version.cuda,
    "cuda_available": available,
    "device_count": count,
    "devices": [torch.cuda.get_device_name(i) for i in range(count)],
}))
"""


class NotebookError(Exception):
    """A failure the user can act on: ``str()`` is one line, reason then fix."""

    def __init__(self, message: str, logs: list[str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.logs = logs
        self.extra = extra


# ---------------------------------------------------------------- host facts


def host_has_nvidia_gpu(sysfs: str = "/sys/bus/pci/devices") -> bool:
    """The project's one GPU rule: any PCI device with vendor 0x10de."""
    for vendor_file in glob.glob(os.path.join(sysfs, "*", "vendor")):
        try:
            with open(vendor_file, encoding="ascii") as handle:
                if handle.read().strip().lower() == NVIDIA_VENDOR:
                    return True
        except OSError:
            continue
    return False


def host_driver_version(
    paths: tuple[str, ...] = ("/sys/module/nvidia/version", "/proc/driver/nvidia/version"),
) -> str | None:
    """The loaded NVIDIA kernel driver's version, or None when no driver is loaded."""
    for path in paths:
        try:
            with open(path, encoding="ascii") as handle:
                text = handle.read()
        except OSError:
            continue
        match = re.search(r"(\d+\.\d+(?:\.\d+)?)", text)
        if match:
            return match.group(1)
    return None


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def min_driver_for_cuda(cuda: str | None) -> str | None:
    """Minimum driver for a CUDA version (``13.0``); the nearest lower table entry."""
    if not cuda:
        return None
    wanted = _version_tuple(cuda)[:2]
    known = sorted(CUDA_MIN_DRIVER, key=_version_tuple)
    best = None
    for entry in known:
        if _version_tuple(entry) <= wanted:
            best = entry
    return CUDA_MIN_DRIVER[best] if best else None


def diagnose_gpu(
    expect_gpu: bool,
    probe: dict[str, Any],
    gpus: str,
    driver: str | None,
    runtimes: list[str],
) -> str:
    """One line on why the probe and the expectation disagree, and what to do."""
    if not expect_gpu:
        return (
            f"PyTorch sees {probe.get('device_count', 0)} CUDA device(s) but expect_gpu is false; "
            "set gpus: none to keep the container on the CPU, or expect_gpu: true"
        )
    cuda = probe.get("cuda")
    needed = min_driver_for_cuda(cuda)
    parts = [
        f"expected a GPU but torch.cuda.is_available() is false (torch {probe.get('torch')}, CUDA {cuda})"
    ]
    if gpus == "none":
        parts.append("the container was started with gpus: none; set gpus: all")
    if driver is None:
        parts.append(
            "no NVIDIA driver is loaded on the host; install it (role wyvern.workbench.nvidia_driver)"
        )
    elif needed and _version_tuple(driver) < _version_tuple(needed):
        parts.append(
            f"host driver {driver} is older than {needed}, the minimum for CUDA {cuda}; "
            "upgrade the driver (nvidia_driver_branch)"
        )
    elif needed:
        parts.append(f"host driver {driver} meets the minimum {needed} for CUDA {cuda}")
    if "nvidia" in runtimes:
        parts.append("Docker has the nvidia runtime")
    else:
        parts.append(
            "Docker has no nvidia runtime; install it (role wyvern.workbench.nvidia_container_toolkit)"
        )
    return "; ".join(parts)


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


# ---------------------------------------------------------------- spec


def resolve_gpus(gpus: str, gpu_present: bool) -> str:
    """``auto`` -> ``all`` on a GPU host, else ``none``; counts stay as strings."""
    value = str(gpus).strip().lower()
    if value == "auto":
        return "all" if gpu_present else "none"
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
    env[TOKEN_ENV] = token
    env[IMAGE_ID_ENV] = image_id
    return {
        "image": image_id,
        "env": env,
        "ports": f"{params['bind_address']}:{params['port']}",
        "gpus": gpus,
        "mounts": sorted(parse_volume(v) for v in params.get("volumes") or []),
        "labels": {str(k): str(v) for k, v in (params.get("labels") or {}).items()},
        "shm_size": parse_size(params["shm_size"]),
        "user": str(params["user"]),
        "restart_policy": params["restart_policy"],
    }


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


def wait_healthy(
    url: str,
    token: str,
    container_state: Callable[[], str],
    timeout: float,
    interval: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    status: Callable[[str, str], int | None] = jupyter_status,
) -> float:
    """Poll until Jupyter answers 200 with the token; seconds waited.

    Fails fast when the container leaves the running state, and after ``timeout``.
    """
    start = clock()
    deadline = start + timeout
    last = None
    while True:
        last = status(url, token)
        if last == 200:
            return clock() - start
        state = container_state()
        if state not in ("running", "created", "restarting"):
            raise NotebookError(
                f"the container exited during start (state {state}); read the logs below and fix the image or its command"
            )
        if last in (401, 403):
            raise NotebookError(
                f"Jupyter at {url} refused the token (HTTP {last}); remove the token file or pass the right token"
            )
        if clock() >= deadline:
            raise NotebookError(
                f"Jupyter at {url} did not answer within {timeout:g}s (last status {last}); "
                "read the logs below, or raise the timeout on a slow host"
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
            raise NotebookError(
                f"cannot reach the Docker daemon at {where} ({exc}); start dockerd, "
                "add this user to the docker group, or set docker_host"
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
        return text.splitlines()[-LOG_LINES:]

    def _url(self) -> str:
        host = self.params["bind_address"]
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.params['port']}"

    # -- the run

    def run(self) -> Result:
        state = self.params["state"]
        self.connect()
        container = self._container()
        desired = image = None
        token_changed = False
        gpus = None
        if state == "started":
            image = self._image()
            gpus = resolve_gpus(self.params["gpus"], self.gpu_present())
            token, token_changed = ensure_token(
                self.params.get("token"), self.params["token_file"], self.check_mode
            )
            desired = desired_spec(self.params, image.id, token, gpus)
        the_plan = plan(
            state, container.attrs if container else None, desired, image.attrs if image else None
        )
        result = Result(
            changed=the_plan.changed or token_changed,
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
            if action == "remove":
                container.remove(force=True)
                container = None
            elif action == "stop":
                container.stop()
            elif action == "create":
                container = self._create(desired)
            elif action == "start":
                self._start(container)
        return container

    def _create(self, desired: dict[str, Any]) -> Any:
        try:
            return self.client.containers.create(
                image=desired["image"],
                name=self.params["name"],
                environment=desired["env"],
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
        self._started_at = time.time()
        self._started_clock = self.clock()
        try:
            container.start()
        except APIError as exc:
            text = str(exc.explanation or exc)
            if "port is already allocated" in text or "address already in use" in text:
                container.remove(force=True)
                raise NotebookError(
                    f"port {self.params['bind_address']}:{self.params['port']} is already taken; "
                    "stop whatever listens there or set port to a free one"
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

    def _state(self, container: Any) -> str:
        try:
            container.reload()
        except NotFound:
            return "removed"
        return str(container.status)

    def check_health(self, container: Any, token: str, result: Result) -> None:
        started_clock = getattr(self, "_started_clock", None)
        started_at = getattr(self, "_started_at", None)
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
            )
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
        expect = str(self.params["expect_gpu"]).lower()
        expected = self.gpu_present() if expect == "auto" else expect in ("true", "yes", "1")
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
