#!/usr/bin/env bash
# Rebuild the default rule, l2l-moments, from scratch on a CPU:
#   bash recipes/l2l-moments.sh [DATA_ROOT] [OUT_DIR]
# DATA_ROOT holds MNIST/raw/; Fashion-MNIST comes from the Debian package dataset-fashion-mnist.
#
# Both stages meta-train the same rule (a 1x8 LSTM on five moment inputs, its update Adam's m/sqrt(v) direction
# corrected by the LSTM) with persistent evolution strategies over 40-step truncations of runs 200-4,000 steps long,
# on the small-nets-large-data family (six MNIST / Fashion-MNIST / digits MLPs and quadratics; none is a task of the
# long-horizon suite or a cell of the deep/wide grid).
# 1. From a zero readout (the rule starts as Adam at 1e-3), 3 epochs at a nominal step of 1e-3 (about 6 minutes on
#    one thread). Shipped as l2l-moments-stage1; set STAGE1_FROM_SCRATCH=0 to start step 2 from the shipped file.
# 2. From stage 1 at a nominal step of 3e-3 (the step the development part of the long-horizon suite favoured),
#    9 epochs, keeping the best by validation on the family (epoch 6; about 90 s an epoch).
set -euo pipefail
DATA=${1:-${LEARNED_OPTIM_DATA:-$HOME/.cache/learned_optim/data}}
OUT=${2:-runs/l2l-moments}
mkdir -p "$OUT"
common=(--task mixture --family small-nets-large-data --data-root "$DATA" --runs-per-epoch 4 --problems-per-step 4
        --steps 4000 --min-steps 200 --unroll 40 --val-problems 7 --meta-grad pes --es-pairs 4 --es-sigma 0.02
        --meta-loss log --layers 1 --hidden-size 8 --preprocess moments --output residual --divergence-factor 3)
STAGE1=l2l-moments-stage1
if [ "${STAGE1_FROM_SCRATCH:-1}" = 1 ]; then
    OMP_NUM_THREADS=1 python -m learned_optim.metatrain "${common[@]}" --bias-init zero_readout --output-scale 1e-3 \
        --lr 2e-3 --epochs 3 --name l2l-moments-stage1 --out "$OUT/l2l-moments-stage1.safetensors"
    STAGE1=$OUT/l2l-moments-stage1.safetensors
fi
OMP_NUM_THREADS=1 python -m learned_optim.metatrain "${common[@]}" --init-from "$STAGE1" --output-scale 3e-3 \
    --lr 1e-3 --epochs "${STAGE2_EPOCHS:-9}" --name l2l-moments --out "$OUT/l2l-moments.safetensors"
