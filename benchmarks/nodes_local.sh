#!/usr/bin/env bash
# One run on 1 node and on 2 nodes of a local workbench (playbooks/run.yml -e run_nodes=N, the
# collection's own path: torchrun with the c10d rendezvous between notebook containers, gloo
# on CPU), REPEATS times each; prints median [min-max] of training images/s and wall time.
#   benchmarks/nodes_local.sh            # 2 nodes against 1, 3 repeats, tiny settings
#   NODES=4 REPEATS=3 RUN_ARGS='-e run_image_size=224 -e run_limit=0' benchmarks/nodes_local.sh
# On one CPU host the nodes share its cores: this measures the overhead of the distributed
# path, not a speed-up. Real scaling needs nodes with their own GPUs (see BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-2}
REPEATS=${REPEATS:-3}
NAME=${BENCH_NAME:-bench-nodes-$$}
OUT=${BENCH_OUT:-$(mktemp -d /tmp/wyvern-bench-nodes-XXXXXX)}
RUN_ARGS=${RUN_ARGS:--e run_epochs=2 -e run_limit=192 -e run_image_size=32 -e run_batch_size=16}
common=(-e "workbench_name=$NAME" -e "workbench_outputs_dir=$OUT" -e "workbench_nodes=$NODES")
cleanup() {
  ansible-playbook playbooks/teardown.yml "${common[@]}" >/dev/null || true
  [ -n "${BENCH_NAME:-}" ] || rm -rf "/var/lib/wyvern/$NAME"
}
trap cleanup EXIT
ansible-playbook playbooks/target.yml playbooks/notebook.yml "${common[@]}" >/dev/null
for nodes in 1 "$NODES"; do
  for seed in $(seq 1 "$REPEATS"); do
    # shellcheck disable=SC2086  # RUN_ARGS is a list of -e options
    ansible-playbook playbooks/run.yml "${common[@]}" -e "run_nodes=$nodes" -e "run_seed=$seed" \
      -e run_weights=none $RUN_ARGS >/dev/null
  done
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path
rows = {}
for m in Path(sys.argv[1]).glob("*/*/*/metrics.json"):
    d = json.loads(m.read_text())
    rows.setdefault(d["world_size"], []).append((d["images_per_s"], d["wall_time_s"], d["best_val_acc"]))
def stat(xs):
    return f"{statistics.median(xs):.1f} [{min(xs):.1f}-{max(xs):.1f}]"
print("| nodes (processes) | runs | train images/s | wall s (train command) | best val acc |")
print("| ---: | ---: | ---: | ---: | ---: |")
for world, r in sorted(rows.items()):
    print(f"| {world} | {len(r)} | {stat([x[0] for x in r])} | {stat([x[1] for x in r])} | "
          f"{stat([x[2] for x in r])} |")
PY
