"""Remove what a test's workbench left in Docker: its containers and its networks.

The notebook module makes a bridge network per workbench (`<name>-net`; `<name>-nodes`
for several nodes). A fixture that removes only the container leaves the network, and
Docker has about 30 address pools: a few test sessions on one machine then exhaust them
and every later workbench fails with "could not find an available, non-overlapping IPv4
address pool". Every fixture cleans up through this one function.
"""

from __future__ import annotations

import contextlib

import docker


def remove_workbench(docker_client, name: str) -> None:
    """Remove the containers `name` and `name-node<i>`, then their networks."""
    containers = docker_client.containers.list(
        all=True, filters={"name": f"^{name}(-node[0-9]+)?$"}
    )
    for container in containers:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
    networks = [f"{name}-net", f"{name}-nodes"] + [f"{c.name}-net" for c in containers]
    for network in dict.fromkeys(networks):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            docker_client.networks.get(network).remove()


@contextlib.contextmanager
def removing_new_dangling_images(docker_client):
    """Remove the untagged images made inside the block (a one-off image build's stages).

    Docker's classic builder keeps each earlier stage of a multi-stage build as an untagged
    image (its cache): the notebook image's venv stage is 6.5 GB, so a test that builds a
    one-off variant leaves that much behind on every run unless it removes it. Run under
    the notebook-image machine lock, so no other build's stages are made meanwhile.
    """
    before = {image.id for image in docker_client.images.list(filters={"dangling": True})}
    try:
        yield
    finally:
        for image in docker_client.images.list(filters={"dangling": True}):
            if image.id not in before:
                with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
                    docker_client.images.remove(image.id, noprune=False)
