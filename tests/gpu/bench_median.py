"""`python bench_median.py results.jsonl`: the bench repetitions' medians, as text and JSON."""

from __future__ import annotations

import json
import statistics
import sys


def main() -> int:
    with open(sys.argv[1]) as fh:
        steps = [json.loads(line) for line in fh if line.strip()]
    reps = [s["result"] for s in steps if s["step"].startswith("bench-")]
    reps = [r for r in reps if isinstance(r, dict) and "finetune" in r]
    summary: dict[str, object] = {"repetitions": len(reps)}
    for mode in ("finetune", "feature-extract"):
        for recipe in ("baseline", "ours"):
            rates = [r[mode][recipe]["images_per_s"] for r in reps]
            epochs = [r[mode][recipe]["epoch_time_s"] for r in reps]
            if rates:
                summary[f"{mode} {recipe}"] = {
                    "images_per_s_median": statistics.median(rates),
                    "images_per_s": rates,
                    "epoch_time_s_median": statistics.median(epochs),
                }
                print(
                    f"{mode} {recipe}: {statistics.median(rates):.1f} images/s median of "
                    f"{[round(x, 1) for x in rates]}, epoch {statistics.median(epochs):.2f} s"
                )
        ratios = [r[mode]["throughput_ratio"] for r in reps]
        if ratios:
            summary[f"{mode} ratio"] = {"median": statistics.median(ratios), "all": ratios}
            print(f"{mode} throughput ratio: {statistics.median(ratios):.2f}x median of {ratios}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
