#!/usr/bin/env bash
# Rebuild the default rule, l2l-moments-decay, on a CPU:
#   bash recipes/l2l-moments-decay.sh [DATA_ROOT] [OUT_DIR]
# DATA_ROOT holds MNIST/raw/; Fashion-MNIST comes from the Debian package dataset-fashion-mnist.
#
# The rule is l2l-moments (recipes/l2l-moments.sh) unchanged, at a nominal step that decays without a horizon:
# 9e-3 / (1 + (t - 1) / 1000) at update t. The metatrain command runs 0 epochs from l2l-moments at that step: it
# validates the rule on l2l-moments' family (small-nets-large-data; none of it is a task of the long-horizon suite or
# a cell of the deep/wide grid) and writes it with its card (about 1 minute on one thread).
# 1. l2l-moments: by default the shipped file; FROM_SCRATCH=1 rebuilds it first with its own recipe (about 20 minutes).
# 2. The decaying step (EPOCHS=N meta-trains N epochs more at it, keeping the best by the family's validation; the
#    shipped rule has none: 10 epochs at 9e-3 / sqrt(1 + (t - 1) / 300) validated better but trained the Fashion-MNIST
#    MLP of the suite's development part worse).
set -euo pipefail
DATA=${1:-${LEARNED_OPTIM_DATA:-$HOME/.cache/learned_optim/data}}
OUT=${2:-runs/l2l-moments-decay}
mkdir -p "$OUT"
START=l2l-moments
if [ "${FROM_SCRATCH:-0}" = 1 ]; then
    bash "$(dirname "$0")/l2l-moments.sh" "$DATA" "$OUT"
    START=$OUT/l2l-moments.safetensors
fi
OMP_NUM_THREADS=1 python -m learned_optim.metatrain --task mixture --family small-nets-large-data --data-root "$DATA" \
    --runs-per-epoch 4 --problems-per-step 4 --steps 4000 --min-steps 200 --unroll 40 --val-problems 7 \
    --meta-grad pes --es-pairs 4 --es-sigma 0.02 --meta-loss log --layers 1 --hidden-size 8 --preprocess moments \
    --output residual --divergence-factor 3 --init-from "$START" --output-scale 9e-3 --step-decay-steps 1000 \
    --step-decay-power 1 --lr 1e-3 --epochs "${EPOCHS:-0}" --name l2l-moments-decay \
    --out "$OUT/l2l-moments-decay.safetensors"
