#!/usr/bin/env bash
# Why does the consistency term not help normals in the paper's sim->real setting at demo scale?
# Runs the Table 3 experiments (paper setting and partial labels) with one knob changed at a
# time (per-task weight, scheme, length) and prints normals accuracy, Abs Rel and the accuracy of
# the normals derived from the predicted depth. Results: benchmarks/README.md.
#   bash benchmarks/table3_sweep.sh [WORKDIR] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR=${1:-/tmp/taskology_table3_sweep}
STEPS=${2:-600}
run() {  # name gin_file gin_params...
  local name=$1 file=$2; shift 2
  local params=(--gin_param "Experiment.train_steps = $STEPS" --gin_param "TaskTrainer.eval_every = 0")
  for p in "$@"; do params+=(--gin_param "$p"); done
  .venv/bin/taskology train --gin_file "$file" --workdir "$WORKDIR/$name" --no_progress "${params[@]}" >/dev/null 2>&1
}
run paper_baseline table3_baseline
run paper_consistency_w1 table3_consistency "depth_normals.normals_weight = 1.0"
run paper_consistency_w0.25 table3_consistency
run partial_baseline table3_partial_baseline
run partial_consistency_w1 table3_partial_consistency "depth_normals.normals_weight = 1.0"
run partial_consistency_w0.25 table3_partial_consistency
run partial_consistency_w1_central table3_partial_consistency "depth_normals.normals_weight = 1.0" "depth_normals.scheme = 'central'"
LONG=$((STEPS * 5 / 2))
run partial_baseline_long table3_partial_baseline "Experiment.train_steps = $LONG"
run partial_consistency_w1_long table3_partial_consistency "depth_normals.normals_weight = 1.0" "Experiment.train_steps = $LONG"
.venv/bin/python - "$WORKDIR" <<'PY'
import json, os, sys
root = sys.argv[1]
print(f"| run | normals <11.25 | <22.5 | <30 | depth Abs Rel | derived-from-depth <11.25 | <22.5 | <30 |")
print("|---|---|---|---|---|---|---|---|")
for name in sorted(os.listdir(root)):
    path = os.path.join(root, name, "metrics.json")
    if not os.path.exists(path):
        continue
    m = json.load(open(path))["metrics"]
    n, d = m["normals"], m["depth"]
    print(f"| {name} | {n['within_11.25']:.1f} | {n['within_22.5']:.1f} | {n['within_30']:.1f} | {d['abs_rel']:.3f} | "
          f"{d['derived_normals_within_11.25']:.1f} | {d['derived_normals_within_22.5']:.1f} | {d['derived_normals_within_30']:.1f} |")
PY
