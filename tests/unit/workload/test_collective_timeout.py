"""A rank whose peer vanished fails within the collective timeout instead of waiting.

Two real processes join a gloo group through `process_group` (as torchrun's workers do,
from the same environment variables); rank 1 leaves without taking part in the next
collective and stays alive (a node whose network is gone, not one that closed its socket),
and rank 0's all_reduce must fail within WYVERN_COLLECTIVE_TIMEOUT_S, not torch's 30 minutes.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
from datetime import timedelta

import pytest
from transfer_learning import distributed
from transfer_learning.errors import WorkloadError


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rank(rank: int, port: int, results: multiprocessing.SimpleQueue, hold: float) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE="2",
        LOCAL_WORLD_SIZE="1",
        RANK=str(rank),
        LOCAL_RANK="0",
        WYVERN_COLLECTIVE_TIMEOUT_S="3",
    )
    with distributed.process_group("cpu"):
        dist.all_reduce(torch.ones(1))  # both ranks are in: the group works
        if rank == 1:
            time.sleep(hold)  # alive, but never in the next collective
            results.put((rank, "left", 0.0))
            os._exit(0)
        started = time.monotonic()
        try:
            dist.all_reduce(torch.ones(1))
            results.put((rank, "returned", time.monotonic() - started))
        except Exception as exc:
            results.put((rank, type(exc).__name__, time.monotonic() - started))
        os._exit(0)


def test_a_peer_that_stops_answering_fails_the_collective_within_the_timeout() -> None:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.SimpleQueue()  # put writes at once: nothing is lost to os._exit
    port = _free_port()
    procs = [ctx.Process(target=_rank, args=(r, port, results, 20.0)) for r in (0, 1)]
    for proc in procs:
        proc.start()
    try:
        deadline = time.monotonic() + 60
        while results.empty() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not results.empty(), "no rank reported within 60 s: the collective hung"
        rank, outcome, waited = results.get()
        assert rank == 0, f"rank {rank} reported first: {outcome}"
        assert outcome != "returned", "the collective completed without its peer"
        assert 2.0 <= waited < 15.0, f"rank 0 failed after {waited:.1f} s, not about 3 s"
    finally:
        for proc in procs:
            proc.kill()
            proc.join(timeout=10)


def test_the_timeout_setting() -> None:
    assert distributed.collective_timeout({}) == timedelta(seconds=300)
    assert distributed.collective_timeout({"WYVERN_COLLECTIVE_TIMEOUT_S": "42.5"}) == timedelta(
        seconds=42.5
    )
    for bad in ("0", "-1", "soon", "nan", "inf"):
        with pytest.raises(WorkloadError, match="WYVERN_COLLECTIVE_TIMEOUT_S"):
            distributed.collective_timeout({"WYVERN_COLLECTIVE_TIMEOUT_S": bad})
