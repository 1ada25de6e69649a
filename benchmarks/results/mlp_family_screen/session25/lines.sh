#!/usr/bin/env bash
# Session 25: the weight-space line from depth-ctrl-e40 (the default fine-tuned 40 epochs on mlp-depth) toward
# session 15's u100-e40 (the 1x24 sigmoid specialist), on the base tasks and the two cells that break first.
# From the repository root, venv active:  bash benchmarks/results/mlp_family_screen/session25/lines.sh [OUT_DIR]
set -euo pipefail
OUT=${1:-runs/s25/lines}
S=benchmarks/results/mlp_family_screen
mkdir -p "$OUT"
export PYTHONPATH=. OMP_NUM_THREADS=1
for a in 0.4 0.6 0.7; do
    w="$OUT/e40-$a.safetensors"
    python $S/session15/interpolate.py $S/session25/depth-ctrl-e40.safetensors $S/session15/u100-e40.safetensors "$a" "$w" > /dev/null
    python $S/session6/evaluate.py "$w"
    python $S/session6/grid.py "$w" 1x20-relu,5x20 "$OUT/grid.jsonl"
done
