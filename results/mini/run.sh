#!/usr/bin/env bash
# Reproduces results/mini/: the small replication (experiments/mini.yaml) on a CPU, then 3 sampling seeds for
# fine-tune only and for CFG and DoG each at its best guided w (w > 1, by fd_effnet on seed 0) per dataset: the
# spread reported in README.md. About 45 minutes on 2 cores; rerunning skips everything already done.
set -euo pipefail
cd "$(dirname "$0")/../.."
DOGBENCH=${DOGBENCH:-.venv/bin/dogbench}
$DOGBENCH run --exp mini --no-progress "$@"
for dataset in caltech101-32 cub100-32; do
  for method in dog cfg; do
    best=$(.venv/bin/python -c "
import pandas as pd
r = pd.read_csv('results/mini/runs.csv')
r = r[(r.dataset == '$dataset') & (r.method == '$method') & (r.seed == 0) & (r.w != 1.0)]
print(f\"{r.sort_values(['fd_effnet', 'w']).w.iloc[0]:g}\")")
    $DOGBENCH run --exp mini --datasets "$dataset" --no-progress "methods=[none, $method]" "w_grid=[1.0, $best]" \
      "seeds=[0, 1, 2]" "$@"
  done
done
