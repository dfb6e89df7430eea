"""Build a local Debian 12 base image with debootstrap, since no registry answers here.

The image is cached by tag: a second call finds it and does nothing.
Run as a script to build it by hand: ``python -m tests.support.base_image``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import docker

from tests.support.locks import machine_lock

BASE_IMAGE = os.environ.get("WYVERN_TEST_BASE_IMAGE", "wyvern/debian-base:bookworm")
MIRROR = os.environ.get("WYVERN_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# python3 so that Ansible (and Molecule) can manage containers made from it.
INCLUDE = "python3,ca-certificates"


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def build_base_image(client: docker.DockerClient, tag: str = BASE_IMAGE) -> str:
    """Return ``tag`` after making sure the image exists (debootstrap + import).

    Built once per machine: a concurrent session waits for the first one's build.
    """
    if image_exists(client, tag):
        return tag
    with machine_lock(f"base-image {tag}"):
        if image_exists(client, tag):
            return tag
        return _build(client, tag)


def _build(client: docker.DockerClient, tag: str) -> str:
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is missing: run `make setup` (apt-get install debootstrap)")
    repository, _, version = tag.rpartition(":")
    with tempfile.TemporaryDirectory(prefix="wyvern-rootfs-") as tmp:
        rootfs = os.path.join(tmp, "rootfs")
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={INCLUDE}",
                "bookworm",
                rootfs,
                MIRROR,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        # Keep the image small: package lists and caches are rebuilt by whoever needs them.
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in os.listdir(os.path.join(rootfs, sub)):
                path = os.path.join(rootfs, sub, entry)
                if os.path.isfile(path):
                    os.unlink(path)
        archive = os.path.join(tmp, "rootfs.tar")
        subprocess.run(["tar", "-C", rootfs, "-cf", archive, "."], check=True)
        client.api.import_image_from_file(
            archive,
            repository=repository,
            tag=version,
            changes=['CMD ["/bin/bash"]', "ENV LANG=C.UTF-8"],
        )
    return tag


SYSTEMD_IMAGE = "wyvern-test/debian-systemd:bookworm"
SYSTEMD_DOCKERFILE = f"""\
FROM {BASE_IMAGE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd systemd-sysv dbus \\
 && rm -rf /var/lib/apt/lists/*
STOPSIGNAL SIGRTMIN+3
CMD ["/lib/systemd/systemd"]
"""
# What systemd as PID 1 needs in a container on these machines (no --privileged).
SYSTEMD_RUN_OPTIONS = {
    "cgroupns": "host",
    "volumes": {"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"}},
    "cap_add": ["SYS_ADMIN"],
    "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
    "tmpfs": {"/run": "", "/run/lock": ""},
}


def build_systemd_image(client: docker.DockerClient) -> str:
    """A Debian 12 image whose PID 1 is systemd (timers, units, `shutdown`), built once."""
    build_base_image(client, BASE_IMAGE)
    if image_exists(client, SYSTEMD_IMAGE):
        return SYSTEMD_IMAGE
    with machine_lock(f"image {SYSTEMD_IMAGE}"):
        if not image_exists(client, SYSTEMD_IMAGE):
            with tempfile.TemporaryDirectory(prefix="wyvern-systemd-") as tmp:
                with open(os.path.join(tmp, "Dockerfile"), "w", encoding="utf-8") as handle:
                    handle.write(SYSTEMD_DOCKERFILE)
                client.images.build(path=tmp, tag=SYSTEMD_IMAGE, rm=True, pull=False)
    return SYSTEMD_IMAGE


if __name__ == "__main__":
    print(build_base_image(docker.from_env(), sys.argv[1] if len(sys.argv) > 1 else BASE_IMAGE))
