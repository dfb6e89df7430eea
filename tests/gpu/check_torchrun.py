"""`python check_torchrun.py OUTPUT_DIR LOG`: did only rank 0 write a torchrun run's outputs?

One run directory with the full set of outputs, one copy of the last epoch's log line, and
metrics.json's world size and backend. One JSON object out; exit 1 when rank 1 wrote too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> int:
    out, log = Path(sys.argv[1]), Path(sys.argv[2]).read_text(errors="replace")
    runs = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    last = [line for line in log.splitlines() if line.startswith("epoch ")]
    result: dict[str, object] = {"run_dirs": runs, "epoch_lines": len(last)}
    if len(runs) == 1:
        run = out / runs[0]
        m = json.loads((run / "metrics.json").read_text())
        result.update(
            files=sorted(p.name for p in run.iterdir()),
            world_size=m["world_size"],
            dist_backend=m.get("dist_backend"),
            device=m["device"],
            num_train=m["num_train"],
            images_per_s=m["images_per_s"],
            best_val_acc=m["best_val_acc"],
            epochs=len(m["epochs"]),
        )
    result["only_rank0_wrote"] = len(runs) == 1 and len(last) == result.get("epochs")
    result["log_tail"] = log[-1200:]
    print(json.dumps(result, indent=1))
    return 0 if result["only_rank0_wrote"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
