#!/usr/bin/env bash
# Rebuild the default rule, l2l-moments-flip, on a CPU:
#   bash recipes/l2l-moments-flip.sh [DATA_ROOT] [OUT_DIR]
# DATA_ROOT holds MNIST/raw/; Fashion-MNIST comes from the Debian package dataset-fashion-mnist.
#
# The rule is l2l-moments-decay (recipes/l2l-moments-decay.sh) with a flip gate on its learned correction: the
# correction closes where a coordinate's gradient keeps flipping sign from step to step (features.moment_gate), so
# that a run oscillating across a valley steps along Adam's direction alone and converges. The gate has no weights:
# the metatrain command runs 0 epochs from l2l-moments-decay with --flip-gate, which validates the rule on the family
# (small-nets-large-data; none of it is a task of the long-horizon suite or a cell of the deep/wide grid) and writes it
# with its card (about 1.5 minutes on one thread).
# FROM_SCRATCH=1 first rebuilds l2l-moments-decay, and l2l-moments before it, with their recipes (about 20 minutes).
set -euo pipefail
DATA=${1:-${LEARNED_OPTIM_DATA:-$HOME/.cache/learned_optim/data}}
OUT=${2:-runs/l2l-moments-flip}
mkdir -p "$OUT"
START=l2l-moments-decay
if [ "${FROM_SCRATCH:-0}" = 1 ]; then
    EPOCHS=0 bash "$(dirname "$0")/l2l-moments-decay.sh" "$DATA" "$OUT"
    START=$OUT/l2l-moments-decay.safetensors
fi
OMP_NUM_THREADS=1 python -m learned_optim.metatrain --task mixture --family small-nets-large-data --data-root "$DATA" \
    --runs-per-epoch 4 --problems-per-step 4 --steps 4000 --min-steps 200 --unroll 40 --val-problems 7 \
    --meta-grad pes --es-pairs 4 --es-sigma 0.02 --meta-loss log --layers 1 --hidden-size 8 --preprocess moments \
    --output residual --flip-gate --divergence-factor 3 --init-from "$START" --output-scale 9e-3 \
    --step-decay-steps 1000 --step-decay-power 1 --lr 1e-3 --epochs "${EPOCHS:-0}" --name l2l-moments-flip \
    --out "$OUT/l2l-moments-flip.safetensors"
