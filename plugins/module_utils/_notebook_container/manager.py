# Copyright: Wyvern workbench team
# Apache-2.0
"""One run of the module: resolve the options, plan, apply, wait for Jupyter, probe.

Check mode returns after the plan: host files (token, port file) and the daemon are only
read, so the result predicts the actions and the diff but not the health check, the
probe or a failure that only starting the container shows (see the module's
``attributes``).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.wyvern.workbench.plugins.module_utils._gpu import (
    PROBE_SCRIPT,
    diagnose_gpu,
    host_driver_version,
    host_has_nvidia_gpu,
    resolve_auto,
)
from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_container import (
    engine,
    host,
)
from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_container.common import (
    NotebookError,
)
from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_container.health import (
    ContainerState,
    CrashLoop,
    jupyter_status,
    wait_healthy,
)
from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_container.spec import (
    HOST_NETWORK,
    NETWORK_LABEL,
    Plan,
    choose_port,
    desired_spec,
    network_name,
    plan,
    published_port,
    resolve_gpus,
)


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
    probe_recorded: bool = False

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
        self._token: str | None = None
        self._restarts_before: int | None = None
        self._started_at: float | None = None
        self._started_clock: float | None = None
        self.network = ""
        self._joined = ""

    def connect(self) -> None:
        if self.client is None:
            self.client = engine.connect(self.params.get("docker_host"))

    def logs(self, container: Any) -> list[str]:
        return engine.logs(container, self._token)

    def _url(self) -> str:
        address = self.params["bind_address"]
        if address in ("0.0.0.0", "::", ""):
            address = "127.0.0.1"
        if ":" in address:
            address = f"[{address}]"
        return f"http://{address}:{self.params['port']}"

    # -- the run

    def resolve_port(self, container: Any) -> bool:
        """Set params["port"] (given, recorded, or chosen); True when port_file changes."""
        port_file = self.params.get("port_file")
        recorded = host.read_port_file(port_file)
        port = self.params.get("port")
        if not port:
            port = choose_port(
                recorded,
                published_port(container.attrs if container else None),
                engine.other_published_ports(self.client, self.params["name"]),
                lambda candidate: host.port_is_free(self.params["bind_address"], candidate),
            )
        self.params["port"] = port
        if not port_file or recorded == port:
            return False
        if not self.check_mode:
            host.write_port_file(port_file, port)
        return True

    def run(self) -> Result:
        state = self.params["state"]
        self.connect()
        container = engine.get_container(self.client, self.params["name"])
        own_network = network_name(self.params["name"])
        self.network = self.params.get("network") or own_network
        # The host's network is Docker's own: never made, checked or removed here.
        on_host = self.network == HOST_NETWORK
        network = None if on_host else engine.get_network(self.client, self.network)
        icc = bool(self.params.get("network_icc"))
        if state == "started" and network is not None and engine.network_icc(network) != icc:
            raise NotebookError(
                f"network {self.network} exists with inter-container traffic "
                f"{'on' if not icc else 'off'}, and network_icc is {icc}; remove the "
                f"workbench (playbooks/teardown.yml) or `docker network rm {self.network}` "
                "once no container is on it, then run again"
            )
        desired = image = None
        extra_changed = False
        gpus = None
        token = ""
        if state == "started":
            image = engine.get_image(self.client, self.params.get("image"))
            gpus = resolve_gpus(self.params["gpus"], self.gpu_present())
            token, token_changed = host.ensure_token(
                self.params.get("token"), self.params["token_file"], self.check_mode
            )
            self._token = token
            mount_changed = host.ensure_token_mount(
                token, self.params["token_file"], self.check_mode
            )
            port_changed = self.resolve_port(container)
            extra_changed = token_changed or mount_changed or port_changed
            desired = desired_spec(self.params, image.id, token, gpus)
        the_plan = plan(
            state, container.attrs if container else None, desired, image.attrs if image else None
        )
        if state == "started" and network is None and not on_host:
            the_plan.actions.insert(0, "create-network")
        if state == "absent" and network is not None:
            the_plan.actions.append("remove-network")
        # The container's own network, left behind when it moved to a shared one (a single
        # notebook that became node 0 of several), or still there at removal.
        if (
            self.network != own_network
            and (state == "absent" or "create" in the_plan.actions)
            and engine.get_network(self.client, own_network) is not None
        ):
            the_plan.actions.append("remove-own-network")
        # Removed without its options (teardown): the network it is on, when this module
        # made it (a workbench's shared node network goes with its last container).
        current = ((container.attrs if container else {}).get("HostConfig") or {}).get(
            "NetworkMode"
        )
        if state == "absent" and current not in (None, self.network, own_network, HOST_NETWORK):
            joined = engine.get_network(self.client, current)
            if joined is not None and NETWORK_LABEL in ((joined.attrs or {}).get("Labels") or {}):
                self._joined = current
                the_plan.actions.append("remove-joined-network")
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
        name = self.params["name"]
        for action in the_plan.actions:
            if action == "create-network":
                engine.create_network(
                    self.client, name, self.network, bool(self.params.get("network_icc"))
                )
            elif action == "remove-network":
                engine.remove_network(self.client, self.network)
            elif action == "remove-own-network":
                engine.remove_network(self.client, network_name(name))
            elif action == "remove-joined-network":
                engine.remove_network(self.client, self._joined)
            elif action == "remove":
                container.remove(force=True)
                container = None
            elif action == "stop":
                container.stop()
            elif action == "create":
                assert desired is not None
                container = engine.create_container(
                    self.client, name, desired, self.params["bind_address"], self.params["port"]
                )
            elif action == "start":
                self._restarts_before = engine.restart_count(container)
                self._started_at = time.time()
                self._started_clock = self.clock()
                engine.start_container(container, self.params, self._token)
        return container

    def _state(self, container: Any) -> ContainerState:
        return engine.state(container)

    def check_health(self, container: Any, token: str, result: Result) -> None:
        started_clock = self._started_clock
        # Restarts are counted from the count before this run's start call (or from now,
        # for a container that already ran).
        restarts_before = self._restarts_before
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
        result.started_at = self._started_at
        # The probe imports torch in the container (seconds). Its answer depends on the
        # image, the container (its devices), the process (a restart re-probes) and the
        # host's driver: a healthy container that still matches the key of its last good
        # probe gives the recorded answer; anything changed, and every start, probes anew.
        record = host.probe_record_path(self.params["token_file"])
        key = self.probe_key(container, result)
        recorded = None if started_clock is not None else host.read_probe_record(record, key)
        if recorded is not None:
            result.probe, result.probe_recorded = recorded, True
            self.compare_gpu(container, result)
            return
        result.probe = self.probe(container, result)
        self.compare_gpu(container, result)
        with contextlib.suppress(OSError):  # no record: the next run probes again
            host.write_probe_record(record, key, result.probe)

    def probe_key(self, container: Any, result: Result) -> dict[str, Any]:
        """What the probe's answer depends on; a running container's StartedAt changes on
        every (re)start, its id on every re-creation."""
        self._state(container)  # reload: StartedAt of this start
        attrs = container.attrs or {}
        return {
            "container_id": container.id,
            "started_at": (attrs.get("State") or {}).get("StartedAt"),
            "image_id": result.image_id,
            "gpus": result.gpus,
            "expect_gpu": self.params["expect_gpu"],
            "driver": self.driver_version(),
            "user": self.params["user"],
            "gpu_present": self.gpu_present(),
        }

    def probe(self, container: Any, result: Result) -> dict[str, Any]:
        exit_code, text = engine.exec_python(container, PROBE_SCRIPT, self.params["user"])
        if exit_code != 0:
            raise NotebookError(
                f"the probe inside the container failed (exit {exit_code}): {text.strip().splitlines()[-1:]}; "
                "the image lacks a working torch/torchvision, rebuild it",
                logs=self.logs(container),
                **result.as_dict(),
            )
        return json.loads(text.strip().splitlines()[-1])

    def compare_gpu(self, container: Any, result: Result) -> None:
        expected = (
            resolve_auto(self.params["expect_gpu"], self.gpu_present(), "true", "false") == "true"
        )
        probe = result.probe or {}
        if bool(probe.get("cuda_available")) == expected:
            return
        message = diagnose_gpu(
            expected,
            probe,
            result.gpus or "none",
            self.driver_version(),
            engine.runtimes(self.client),
        )
        raise NotebookError(message, logs=self.logs(container), **result.as_dict())
