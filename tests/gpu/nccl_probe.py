"""Under `torchrun --nproc-per-node 2` on a machine with ONE GPU: what NCCL says to that.

Step 1 does what the workload did before the fix: `torch.cuda.set_device(LOCAL_RANK)`.
Step 2 puts both ranks on GPU 0 and all-reduces over NCCL. Step 3 does the same over gloo
with CUDA tensors. Each rank prints one JSON line per step; errors are caught and printed.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta

import torch
import torch.distributed as dist

rank = int(os.environ["RANK"])
local_rank = int(os.environ["LOCAL_RANK"])


def report(step: str, ok: bool, detail: str) -> None:
    print(json.dumps({"rank": rank, "step": step, "ok": ok, "detail": detail[-600:]}), flush=True)


try:
    torch.cuda.set_device(local_rank)
    report("set_device(LOCAL_RANK)", True, f"cuda:{local_rank}")
except Exception as exc:  # what the unfixed workload hit on rank 1
    report("set_device(LOCAL_RANK)", False, f"{type(exc).__name__}: {exc}")
torch.cuda.set_device(0)

for backend in ("nccl", "gloo"):
    try:
        if backend == "gloo":
            # A fresh group over a fresh store: the NCCL group may be broken.
            store = dist.TCPStore(
                os.environ["MASTER_ADDR"],
                int(os.environ["MASTER_PORT"]) + 1,
                int(os.environ["WORLD_SIZE"]),
                rank == 0,
                timedelta(seconds=30),
            )
            dist.init_process_group("gloo", store=store, rank=rank, world_size=2)
        else:
            dist.init_process_group("nccl", timeout=timedelta(seconds=30))
        t = torch.full((4,), float(rank + 1), device="cuda:0")
        dist.all_reduce(t)
        torch.cuda.synchronize()
        report(f"{backend} all_reduce on cuda:0", t.tolist() == [3.0] * 4, str(t.tolist()))
    except Exception as exc:
        report(f"{backend} all_reduce on cuda:0", False, f"{type(exc).__name__}: {exc}")
    finally:
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception as exc:
                report(f"{backend} destroy", False, f"{type(exc).__name__}: {exc}")
