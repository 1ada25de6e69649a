#!/usr/bin/env bash
# Session 24: two weight-space lines out of the default, l2l-mlp-family-plus (WiSE-FT style), on the base tasks and
# the two grid cells that break first (1x20-relu, 5x20). Run from the repository root, one thread:
#   bash benchmarks/results/mlp_family_screen/session24/wise_lines.sh [OUT_DIR]
# Line "e40": toward session 15's u100-e40 (the old default fine-tuned over whole runs on the 1x24 sigmoid net);
# line "shallow": toward shallow-ft here (the default fine-tuned over whole runs on mlp-shallow, best epoch 11).
set -euo pipefail
OUT=${1:-runs/s24/lines}
S=benchmarks/results/mlp_family_screen
mkdir -p "$OUT"
export PYTHONPATH=. OMP_NUM_THREADS=1
for spec in e40:$S/session15/u100-e40.safetensors:"0.2 0.4 0.6 0.7 0.75 0.9" \
            shallow:$S/session24/shallow-ft.safetensors:"0.5 1.0"; do
    IFS=: read -r line partner alphas <<< "$spec"
    for a in $alphas; do
        w="$OUT/$line-$a.safetensors"
        python $S/session15/interpolate.py l2l-mlp-family-plus "$partner" "$a" "$w" > /dev/null
        python $S/session6/evaluate.py "$w"
        python $S/session6/grid.py "$w" 1x20-relu,5x20 "$OUT/grid.jsonl"
    done
done
