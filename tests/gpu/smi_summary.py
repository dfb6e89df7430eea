"""Summarise `nvidia-smi --query-gpu=timestamp,utilization.gpu,... -lms N` samples per run.

`python tests/gpu/smi_summary.py SMI.csv OUTPUT_DIR RUN_ID...`: for each run, the samples
inside its training window (from metrics.json: the run's end minus wall_time_s plus
setup_time_s, i.e. epochs only, without decoding) and their mean/median/max GPU
utilisation and memory. The run's end is metrics.json's modification time. One JSON line.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from datetime import datetime
from pathlib import Path


def _samples(path: Path) -> list[tuple[float, float, float]]:
    rows = []
    with path.open() as fh:
        for row in csv.reader(fh):
            try:
                ts = datetime.strptime(row[0].strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
                rows.append((ts, float(row[1]), float(row[2])))
            except (ValueError, IndexError):
                continue  # header or a partial last line
    return rows


def main() -> int:
    smi, out = Path(sys.argv[1]), Path(sys.argv[2])
    samples = _samples(smi)
    result = {}
    for run_id in sys.argv[3:]:
        metrics_file = out / run_id / "metrics.json"
        m = json.loads(metrics_file.read_text())
        end = metrics_file.stat().st_mtime
        start = end - m["wall_time_s"] + m["setup_time_s"]
        util = [u for ts, u, _ in samples if start <= ts <= end]
        mem = [mb for ts, _, mb in samples if start <= ts <= end]
        result[run_id] = {
            "batch_size": m["batch_size"],
            "train_window_s": end - start,
            "samples": len(util),
            "gpu_util_mean": statistics.mean(util) if util else None,
            "gpu_util_median": statistics.median(util) if util else None,
            "gpu_util_max": max(util) if util else None,
            "memory_used_mib_max": max(mem) if mem else None,
            "images_per_s_per_epoch": [round(r["images_per_s"], 1) for r in m["epochs"]],
            "epoch_time_s": [round(r["epoch_time_s"], 3) for r in m["epochs"]],
            "setup_time_s": round(m["setup_time_s"], 2),
        }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
