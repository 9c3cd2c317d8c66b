#!/usr/bin/env bash
# Reproduces results/mini/: the small replication (experiments/mini.yaml) on a CPU. w (and cfg+dog's two scales,
# autoguidance's w) are chosen on selection seed 0; everything reported is sampled afresh on report seeds 1-2.
# About an hour on 2 cores; rerunning skips everything already done, and several processes can share the work:
#   results/mini/run.sh & results/mini/run.sh     (each takes the sample sets nobody holds)
set -euo pipefail
cd "$(dirname "$0")/../.."
DOGBENCH=${DOGBENCH:-.venv/bin/dogbench}
$DOGBENCH run --exp mini --no-progress "$@"
