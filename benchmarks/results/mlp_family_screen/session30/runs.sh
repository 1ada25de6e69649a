#!/usr/bin/env bash
# Session 30: the default fine-tuned on mlp-family-noisy with a gradient-noise input (--grad-noise-input, at zero
# weight at the start), session 29's recipe otherwise (its run is the control). From the repository root, one thread
# per process; the meta-training run uses about 20 GB of memory.
set -euo pipefail
S=benchmarks/results/mlp_family_screen
export PYTHONPATH=. OMP_NUM_THREADS=1
mkdir -p runs/s30
# what the input reads along the default's own runs (the default widened with a zero column: the same steps)
python $S/session30/noise_values.py 20-sigmoid-128 64-relu-64 20-relu-32 > $S/session30/noise_values.out
python -m learned_optim.metatrain --task mixture --family mlp-family-noisy --grad-norm tensor --grad-norm-target 0.0015 \
    --tensor-rms-input --grad-noise-input --steps 100 --unroll 100 --runs-per-epoch 16 --val-problems 16 --lr 0.001 \
    --epochs 24 --init-from pretrained/l2l-mlp-family-plus.safetensors --device cpu --data-root ../shared/data \
    --out runs/s30/noise.safetensors > runs/s30/noise.log
# stopped by hand after epoch 16 for session time (about 190 s per epoch), and finished from its checkpoint: the
# best validation's weights (epoch 13) and the card (its command is this one)
python -m learned_optim.metatrain --task mixture --family mlp-family-noisy --grad-norm tensor --grad-norm-target 0.0015 \
    --tensor-rms-input --grad-noise-input --steps 100 --unroll 100 --runs-per-epoch 16 --val-problems 16 --lr 0.001 \
    --epochs 16 --init-from pretrained/l2l-mlp-family-plus.safetensors --device cpu --data-root ../shared/data \
    --out runs/s30/noise.safetensors --resume >> runs/s30/noise.log
# while it ran: snapshots of its current weights (epochs 6 and 11), on two small-batch nets and the base task
#   python $S/session29/snapshot.py runs/s30/noise.ckpt.safetensors runs/s30/snapN.safetensors
#   python $S/session6/evaluate.py runs/s30/snapN.safetensors; python $S/session29/small_batch.py runs/s30/snapN.safetensors 20-relu-32 64-relu-64
W=runs/s30/noise.safetensors   # committed as $S/session30/noise.safetensors
python $S/session6/evaluate.py $W > $S/session30/evaluate_noise.out
python $S/session29/small_batch.py $W 64-relu-64 64-relu-32 20-relu-32 64x64-relu-64 128-relu-64 64-relu-128 \
    64-sigmoid-64 20-sigmoid-32 > $S/session30/small_batch_noise.out
python $S/session6/grid.py $W 2x1000,1x20-relu,1x20,1x40,2x20 runs/s30/grid.jsonl   # two processes
python $S/session6/grid.py $W 1x1000,5x300,1x60,2x100,3x20,4x20,5x20,3x120 runs/s30/grid.jsonl
python $S/session29/grid_table.py runs/s30/grid.jsonl > $S/session30/grid_noise_table.md
# the input held at the noise level (0) inside the trained rule: what the input itself buys
python $S/session30/ablate.py $W 0 runs/s30/noise-held0.safetensors
python $S/session6/evaluate.py runs/s30/noise-held0.safetensors > $S/session30/evaluate_noise_held0.out
python $S/session29/small_batch.py runs/s30/noise-held0.safetensors 64-relu-64 20-relu-32 64-relu-32 > $S/session30/small_batch_noise_held0.out
