#!/usr/bin/env bash
# Rebuild the default rule, l2l-mlp-distill, from the shipped rules it is made of:
#   bash recipes/l2l-mlp-distill.sh [DATA_ROOT] [OUT_DIR]
# 1. The specialist teacher, l2l-sigmoid-1x24 (shipped as an intermediate rule): l2l-mlp-family with the per-tensor
#    RMS input added at zero weight, meta-trained on 1x24 sigmoid MNIST MLPs over whole 100-step runs, 20 + 20 epochs
#    (about 18 CPU minutes per stage). Skipped unless SPECIALIST_FROM_SCRATCH=1: the shipped file is used, so that
#    step 2 gives the shipped weights bit for bit; a rerun of step 1 is not bitwise the shipped specialist.
# 2. Distillation (python -m learned_optim.distill): l2l-mlp-family-plus widened with a tensor-count input (T clipped
#    to >= 4) and taught, on the mlp-family-plus mixture, the specialist's steps on the first layer of the
#    one-hidden-layer sigmoid members, a fifth of them on their output layer, and l2l-mlp-family-plus's steps
#    everywhere else; three DAgger rounds of 48 training problems, 15 passes each. About 40 minutes on one CPU thread.
set -euo pipefail
DATA=${1:-${LEARNED_OPTIM_DATA:-$HOME/.cache/learned_optim/data}}
OUT=${2:-runs/l2l-mlp-distill}
mkdir -p "$OUT"
SPECIALIST=l2l-sigmoid-1x24
if [ "${SPECIALIST_FROM_SCRATCH:-0}" = 1 ]; then
    stage=(--task mnist_mlp --hidden 24 --val-problems 10 --grad-norm tensor --grad-norm-target 0.0015 --tensor-rms-input
           --epochs 20 --lr 0.001 --unroll 100 --device cpu --data-root "$DATA")
    python -m learned_optim.metatrain "${stage[@]}" --init-from l2l-mlp-family \
        --name l2l-sigmoid-1x24-stage1 --out "$OUT/l2l-sigmoid-1x24-stage1.safetensors"
    python -m learned_optim.metatrain "${stage[@]}" --init-from "$OUT/l2l-sigmoid-1x24-stage1.safetensors" \
        --name l2l-sigmoid-1x24 --out "$OUT/l2l-sigmoid-1x24.safetensors"
    SPECIALIST=$OUT/l2l-sigmoid-1x24.safetensors
fi
python -m learned_optim.distill --base l2l-mlp-family-plus --specialist "$SPECIALIST" --problems 48 --rounds 3 \
    --passes 15 --tensor-count-range 4 0 --data-root "$DATA" --name l2l-mlp-distill --out "$OUT/l2l-mlp-distill.safetensors"
