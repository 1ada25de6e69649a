#!/usr/bin/env bash
# The shipped default, l2l-mlp-family-plus, from the rule it started from (l2l-mlp-family, shipped beside it):
#   bash recipes/l2l-mlp-family-plus.sh [DATA_ROOT] [OUT_DIR]
# 1. 30 epochs of whole 100-step runs (--unroll 100, meta-lr 1e-3) on mlp-family-plus, starting at l2l-mlp-family
#    with the per-tensor RMS input added at zero weight (--tensor-rms-input: the same update function to begin with);
# 2. 30 more from that leg's best weights, with a fresh meta-optimizer state.
# On one CPU thread each leg took 77-89 minutes (sessions 16-17, screen.md); whole-run unrolls of this family use
# about 21 GB of memory on the CPU. EPOCHS=1 makes a smoke test of the chain; DEVICE=cuda runs it on a GPU.
# The result is not bitwise the shipped file (thread count and summation order differ between runs).
set -euo pipefail
DATA=${1:-../shared/data}
OUT=${2:-runs/l2l-mlp-family-plus}
EPOCHS=${EPOCHS:-30}
DEVICE=${DEVICE:-cpu}
mkdir -p "$OUT"
recipe=(--task mixture --family mlp-family-plus --grad-norm tensor --grad-norm-target 0.0015 --tensor-rms-input
        --steps 100 --unroll 100 --runs-per-epoch 16 --val-problems 8 --lr 0.001 --epochs "$EPOCHS"
        --device "$DEVICE" --data-root "$DATA")
python -m learned_optim.metatrain "${recipe[@]}" --init-from l2l-mlp-family \
    --name famplus-u100 --out "$OUT/famplus-u100.safetensors"
python -m learned_optim.metatrain "${recipe[@]}" --init-from "$OUT/famplus-u100.safetensors" \
    --name l2l-mlp-family-plus --out "$OUT/l2l-mlp-family-plus.safetensors"
