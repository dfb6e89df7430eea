# Copyright: Wyvern workbench team
# Apache-2.0
"""The Docker SDK calls, each wrapped so that a refusal reads as one line with its fix.

``client`` is a ``docker.DockerClient``; nothing here decides what the container should be
(``spec``) or whether it is healthy (``health``).
"""

from __future__ import annotations

import os
from typing import Any

from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_container.common import (
    HIDDEN,
    NotebookError,
)
from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_container.health import (
    ContainerState,
)
from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_container.spec import (
    CONTAINER_PORT,
    HOST_NETWORK,
    NETWORK_LABEL,
    published_port,
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


LOG_LINES = 50


def connect(docker_host: str | None) -> Any:
    base_url = docker_host or None
    try:
        client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
        client.ping()
    except DockerException as exc:
        where = base_url or os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        if "Permission denied" in str(exc):
            fix = "run as root (become: true) or as a member of the docker group"
        else:
            fix = "start dockerd on this host, or point docker_host at the daemon that runs"
        raise NotebookError(f"cannot reach the Docker daemon at {where} ({exc}); {fix}") from exc
    return client


def get_container(client: Any, name: str) -> Any:
    try:
        return client.containers.get(name)
    except NotFound:
        return None


def get_image(client: Any, image: str | None) -> Any:
    if not image:
        raise NotebookError("state=started needs image; set image to the notebook image tag")
    try:
        return client.images.get(image)
    except ImageNotFound as exc:
        raise NotebookError(
            f"image {image} is not on this host; build it first (role wyvern.workbench.notebook) "
            "or fix the image name"
        ) from exc


def get_network(client: Any, network: str) -> Any:
    """The bridge network named ``network`` (see spec.network_name), or None."""
    try:
        return client.networks.get(network)
    except NotFound:
        return None


ICC_OPTION = "com.docker.network.bridge.enable_icc"


def network_icc(network: Any) -> bool:
    """Whether containers on this bridge may reach each other (Docker's default: yes)."""
    options = (network.attrs or {}).get("Options") or {}
    return str(options.get(ICC_OPTION, "true")).lower() == "true"


def other_published_ports(client: Any, name: str) -> set[int]:
    """Host ports that containers other than ``name`` publish (or, on the host's network,
    have Jupyter listen on)."""
    ports: set[int] = set()
    for other in client.containers.list(all=True):
        if other.name != name:
            if (other.attrs.get("HostConfig") or {}).get("NetworkMode") == HOST_NETWORK:
                listening = published_port(other.attrs)  # nothing published there
                ports.update([listening] if listening is not None else [])
            for bindings in (
                (other.attrs.get("HostConfig") or {}).get("PortBindings") or {}
            ).values():
                ports.update(
                    int(b["HostPort"])
                    for b in bindings or []
                    if str(b.get("HostPort") or "").isdigit()
                )
    return ports


def create_network(client: Any, name: str, network: str, icc: bool = False) -> None:
    # A single notebook is alone on its bridge, and inter-container traffic is off on it:
    # Docker's isolation rules keep containers on other networks out, so Jupyter is
    # reached through the published port only. The nodes of one workbench share a bridge
    # with inter-container traffic on (icc): they reach each other there, and containers
    # on every other network are still kept out by the same isolation rules.
    client.networks.create(
        network,
        driver="bridge",
        options={ICC_OPTION: "true" if icc else "false"},
        labels={NETWORK_LABEL: name},
    )


def remove_network(client: Any, name: str) -> None:
    """Remove the bridge network ``name`` unless a container is still on it."""
    network = get_network(client, name)
    if network is None:
        return
    network.reload()
    if network.attrs.get("Containers"):
        return  # something else joined it; leave it rather than break that
    network.remove()


def device_requests(gpus: str) -> list[Any]:
    if gpus == "none":
        return []
    count = -1 if gpus == "all" else int(gpus)
    return [DeviceRequest(count=count, capabilities=[["gpu"]])]


def create_container(
    client: Any, name: str, desired: dict[str, Any], bind_address: str, port: int
) -> Any:
    # On the host's network nothing is published: Jupyter listens on bind_address:port itself
    # (desired env, spec.JUPYTER_IP_ENV and JUPYTER_PORT_ENV).
    where = (
        {"network_mode": HOST_NETWORK}
        if desired["network"] == HOST_NETWORK
        else {
            "network": desired["network"],
            "ports": {f"{CONTAINER_PORT}/tcp": (bind_address, port)},
        }
    )
    try:
        container = client.containers.create(
            image=desired["image"],
            name=name,
            environment=desired["env"],
            init=desired["init"],
            **where,
            extra_hosts=dict(entry.split(":", 1) for entry in desired.get("extra_hosts") or []),
            device_requests=device_requests(desired["gpus"]),
            volumes=desired["mounts"],
            labels=desired["labels"],
            shm_size=desired["shm_size"],
            user=desired["user"],
            restart_policy={"Name": desired["restart_policy"]},
            detach=True,
        )
        if desired.get("aliases"):
            # Aliases by reconnecting the created container: the Docker SDK of Debian 12
            # (python3-docker 5, an instance's own Python) has no networking_config.
            client.api.disconnect_container_from_network(container.id, desired["network"])
            client.api.connect_container_to_network(
                container.id, desired["network"], aliases=list(desired["aliases"])
            )
        return container
    except APIError as exc:
        raise NotebookError(f"Docker refused to create {name}: {exc.explanation or exc}") from exc


def start_container(container: Any, params: dict[str, Any], token: str | None) -> None:
    """Start it; a taken port or missing GPU support removes it and names the fix."""
    try:
        container.start()
    except APIError as exc:
        text = str(exc.explanation or exc)
        if "port is already allocated" in text or "address already in use" in text:
            container.remove(force=True)
            how = (
                f"set port to a free one, or delete {params['port_file']} to choose another"
                if params.get("port_file")
                else "set port to a free one"
            )
            raise NotebookError(
                f"port {params['bind_address']}:{params['port']} is already taken; "
                f"stop whatever listens there, or {how}"
            ) from exc
        if "could not select device driver" in text:
            container.remove(force=True)
            raise NotebookError(
                f"Docker cannot give the container GPUs ({text}); install the NVIDIA container "
                "toolkit (role wyvern.workbench.nvidia_container_toolkit) or set gpus: none"
            ) from exc
        raise NotebookError(
            f"Docker could not start {params['name']}: {text}", logs=logs(container, token)
        ) from exc


def restart_count(container: Any) -> int:
    return int((container.attrs or {}).get("RestartCount") or 0)


def state(container: Any) -> ContainerState:
    try:
        container.reload()
    except NotFound:
        return ContainerState(status="removed")
    return ContainerState.of(container.attrs)


def logs(container: Any, token: str | None) -> list[str]:
    """The last lines of the container's log; a server that prints its URL must not hand
    the token to the log."""
    try:
        text = container.logs(tail=LOG_LINES).decode("utf-8", "replace")
    except (DockerException, AttributeError):
        return []
    if token:
        text = text.replace(token, HIDDEN)
    return text.splitlines()[-LOG_LINES:]


def exec_python(container: Any, script: str, user: str) -> tuple[int, str]:
    exit_code, output = container.exec_run(["python", "-c", script], user=user)
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
    return exit_code, text


def runtimes(client: Any) -> list[str]:
    """Docker's runtimes (nvidia among them when the toolkit is set up); none when it fails."""
    try:
        return sorted((client.info().get("Runtimes") or {}).keys())
    except DockerException:
        return []
