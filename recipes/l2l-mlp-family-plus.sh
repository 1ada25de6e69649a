#!/usr/bin/env bash
# Rebuild l2l-mlp-family-plus from the rule it started from (l2l-mlp-family, shipped beside it):
#   bash recipes/l2l-mlp-family-plus.sh [DATA_ROOT] [OUT_DIR]
# 1. 30 epochs of whole 100-step runs (--unroll 100, meta-lr 1e-3) on the mlp-family-plus mixture, starting at
#    l2l-mlp-family with the per-tensor RMS input added at zero weight (the same update function to begin with);
#    the shipped result of this stage is l2l-mlp-family-plus-stage1.
# 2. 30 more from that stage's best weights, with a fresh meta-optimizer state.
# On one CPU thread each stage took 77-89 minutes; whole-run unrolls of this family use about 21 GB of memory on the
# CPU. EPOCHS=1 makes a smoke test of the chain; DEVICE=cuda runs it on a GPU. The result is not bitwise the shipped
# file (thread count and summation order differ between runs).
set -euo pipefail
DATA=${1:-${LEARNED_OPTIM_DATA:-$HOME/.cache/learned_optim/data}}
OUT=${2:-runs/l2l-mlp-family-plus}
EPOCHS=${EPOCHS:-30}
DEVICE=${DEVICE:-cpu}
mkdir -p "$OUT"
recipe=(--task mixture --family mlp-family-plus --grad-norm tensor --grad-norm-target 0.0015 --tensor-rms-input
        --steps 100 --unroll 100 --runs-per-epoch 16 --val-problems 8 --lr 0.001 --epochs "$EPOCHS"
        --device "$DEVICE" --data-root "$DATA")
python -m learned_optim.metatrain "${recipe[@]}" --init-from l2l-mlp-family \
    --name l2l-mlp-family-plus-stage1 --out "$OUT/l2l-mlp-family-plus-stage1.safetensors"
python -m learned_optim.metatrain "${recipe[@]}" --init-from "$OUT/l2l-mlp-family-plus-stage1.safetensors" \
    --name l2l-mlp-family-plus --out "$OUT/l2l-mlp-family-plus.safetensors"
