#!/usr/bin/env bash
# famplus-u100b from the shipped default, as sessions 15-17 made it (about 2 x 80-100 minutes on one CPU thread):
#   bash benchmarks/results/mlp_family_screen/session20/reproduce_famplus_u100b.sh [DATA_ROOT] [OUT_DIR]
# 1. the default with the per-tensor RMS input added at zero weight (session15/widen.py: the same update function);
# 2. 30 epochs of whole 100-step runs on mlp-family-plus from there (session 16's famplus-u100);
# 3. 30 more from that leg's best weights, with a fresh meta-optimizer state (session 17's famplus-u100b).
# EPOCHS=1 makes a smoke test of the chain; DEVICE=cuda runs it on a GPU.
set -euo pipefail
DATA=${1:-../shared/data}
OUT=${2:-runs/famplus-u100b}
EPOCHS=${EPOCHS:-30}
DEVICE=${DEVICE:-cpu}
mkdir -p "$OUT"
PYTHONPATH=. python benchmarks/results/mlp_family_screen/session15/widen.py l2l-mlp-family "$OUT/default-wide.safetensors"
recipe=(--task mixture --family mlp-family-plus --grad-norm tensor --grad-norm-target 0.0015 --tensor-rms-input
        --steps 100 --unroll 100 --runs-per-epoch 16 --val-problems 8 --lr 0.001 --epochs "$EPOCHS"
        --device "$DEVICE" --data-root "$DATA")
python -m learned_optim.metatrain "${recipe[@]}" --init-from "$OUT/default-wide.safetensors" \
    --name famplus-u100 --out "$OUT/famplus-u100.safetensors"
python -m learned_optim.metatrain "${recipe[@]}" --init-from "$OUT/famplus-u100.safetensors" \
    --name famplus-u100b --out "$OUT/famplus-u100b.safetensors"
