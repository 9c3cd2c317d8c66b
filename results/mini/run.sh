#!/usr/bin/env bash
# Reproduces results/mini/: the small replication (experiments/mini.yaml) on a CPU, then 3 sampling seeds at each
# method's best w per dataset (the spread reported in README.md). About an hour on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
DOGBENCH=${DOGBENCH:-.venv/bin/dogbench}
$DOGBENCH run --exp mini --no-progress "$@"
for dataset in caltech101-32 cub100-32; do
  for method in dog cfg; do
    # this method's best w on this dataset, from the single-seed grid
    best=$(.venv/bin/python -c "
import pandas as pd
b = pd.read_csv('results/mini/leaderboard.csv')
print(f\"{b[(b.dataset == '$dataset') & (b.method == '$method')].w.iloc[0]:g}\")")
    $DOGBENCH run --exp mini --datasets "$dataset" --no-progress "methods=[none, $method]" "w_grid=[1.0, $best]" \
      "seeds=[0, 1, 2]" "$@"
  done
done
