#!/usr/bin/env bash
# Session 24: wb07-ft's snapshots (epochs 3, 6 and 8, the best validation) on the base tasks and two cells.
#   bash benchmarks/results/mlp_family_screen/session24/snapshots.sh    (from the repository root, one thread)
set -euo pipefail
S=benchmarks/results/mlp_family_screen
export PYTHONPATH=. OMP_NUM_THREADS=1
for e in 3 6 8; do
    python $S/session6/evaluate.py $S/session24/wb07-ft-e$e.safetensors
    python $S/session6/grid.py $S/session24/wb07-ft-e$e.safetensors 1x20-relu,5x20 runs/s24/snapshots_grid.jsonl
done
