#!/usr/bin/env bash
# Session 29: the default fine-tuned on mlp-family-noisy (mlp-family-plus and four small-batch ReLU nets), and the
# result on small-batch nets, the base task and the grid. From the repository root, one thread per process; the
# meta-training run uses about 20 GB of memory (66 minutes on one CPU thread: the card's wall_time_s 3940).
set -euo pipefail
S=benchmarks/results/mlp_family_screen
export PYTHONPATH=. OMP_NUM_THREADS=1
mkdir -p runs/s29
python -m learned_optim.metatrain --task mixture --family mlp-family-noisy --grad-norm tensor --grad-norm-target 0.0015 \
    --tensor-rms-input --steps 100 --unroll 100 --runs-per-epoch 16 --val-problems 16 --lr 0.001 --epochs 24 \
    --init-from pretrained/l2l-mlp-family-plus.safetensors --device cpu --data-root ../shared/data \
    --out runs/s29/noisy.safetensors > runs/s29/noisy.log
# while it ran: snapshots of its current weights (epochs 3, 6, 11, 19), on two small-batch nets, the base task, two cells
#   python $S/session29/snapshot.py runs/s29/noisy.ckpt.safetensors runs/s29/snapN.safetensors
W=runs/s29/noisy.safetensors   # committed as $S/session29/noisy.safetensors
python $S/session6/grid.py $W 1x20-relu,1x20,1x40,2x20,1x60,2x100,3x20,4x20,5x20,3x120,1x1000,2x1000,5x300 runs/s29/grid.jsonl  # run as two processes
python $S/session6/evaluate.py $W > $S/session29/evaluate_noisy.out
python $S/session29/small_batch.py $W 64-relu-64 64-relu-32 20-relu-32 64x64-relu-64 128-relu-64 64-relu-128 64-relu-256 \
    64-sigmoid-64 64-tanh-64 20-sigmoid-32 > $S/session29/small_batch_noisy.out
python $S/session29/grid_table.py runs/s29/grid.jsonl > $S/session29/grid_noisy_table.md
python $S/session29/cnn.py $W 32 100 > $S/session29/cnn_noisy.out
