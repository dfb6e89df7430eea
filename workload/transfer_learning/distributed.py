"""The device and the torchrun process group: joined once, left on every exit path."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from transfer_learning.errors import WorkloadError


@dataclass
class Dist:
    """This process's place in the group; world 1 when not launched by torchrun."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    # torchrun's agent (one per node): its rank among the nodes and how many there are.
    node_rank: int = 0
    nodes: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, values: list[int]) -> list[int]:
        """Every rank's list, concatenated in rank order."""
        if self.world == 1:
            return values
        parts: list[list[int]] = [[] for _ in range(self.world)]
        dist.all_gather_object(parts, values)
        return [v for part in parts for v in part]

    def gather_objects(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order (on every rank)."""
        if self.world == 1:
            return [value]
        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, value)
        return parts

    def all_sum(self, values: list[float], device: torch.device) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    @property
    def backend(self) -> str | None:
        return str(dist.get_backend()) if self.world > 1 else None

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def select_device(name: str, local_rank: int = 0) -> torch.device:
    """Pick the device once; asking for CUDA where there is none is an error, not a CPU run."""
    if name == "cuda" and not torch.cuda.is_available():
        raise WorkloadError("--device cuda was asked for but no CUDA device is available")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        # More processes than GPUs (torchrun --nproc-per-node 2 on one GPU): ranks share them.
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


# How long a collective waits for a peer before it fails (torch's own defaults: 10 min for
# NCCL, 30 for gloo): a node that vanished (an instance gone, its network cut) fails the
# others within this bound instead of leaving them waiting. Every step's collectives finish
# in well under a second; rank 0 alone evaluating and saving an epoch is the longest wait.
COLLECTIVE_TIMEOUT_ENV = "WYVERN_COLLECTIVE_TIMEOUT_S"
DEFAULT_COLLECTIVE_TIMEOUT_S = 300


def collective_timeout(environ: dict[str, str] | None = None) -> timedelta:
    """The process group's timeout, from WYVERN_COLLECTIVE_TIMEOUT_S (seconds) or 300."""
    raw = (os.environ if environ is None else environ).get(COLLECTIVE_TIMEOUT_ENV, "")
    if not raw.strip():
        return timedelta(seconds=DEFAULT_COLLECTIVE_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise WorkloadError(
            f"{COLLECTIVE_TIMEOUT_ENV}={raw!r} must be a number of seconds > 0 "
            f"(unset it for {DEFAULT_COLLECTIVE_TIMEOUT_S})"
        )
    return timedelta(seconds=seconds)


@contextmanager
def process_group(device_name: str) -> Iterator[Dist]:
    """Join the torchrun group when launched by torchrun (NCCL with a GPU per process, gloo
    on CPU or when processes share a GPU); leave it.

    The group is destroyed on the way out, errors included, so a notebook can train twice and
    a failed rank does not leave the others waiting in a collective at exit.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield Dist()
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    # NCCL refuses two ranks on one GPU ("Duplicate GPU detected"): with more processes on
    # this node than GPUs, the ranks share the GPUs and talk over gloo instead.
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    nccl = use_cuda and local_world <= torch.cuda.device_count()
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend="nccl" if nccl else "gloo", timeout=collective_timeout())
    try:
        node_rank = int(os.environ.get("GROUP_RANK", "0"))
        nodes = max(1, world // max(1, local_world))
        yield Dist(dist.get_rank(), dist.get_world_size(), local_rank, node_rank, nodes)
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()
