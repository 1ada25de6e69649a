#!/usr/bin/env bash
# Session 31: the family's meta-gradients per member at the default; distillation of session 28's routed composition
# into one rule (a diagnostic). From the repository root, one thread per process.
set -euo pipefail
S=benchmarks/results/mlp_family_screen
D=pretrained/l2l-mlp-family-plus.safetensors
E=$S/session15/u100-e40.safetensors
export PYTHONPATH=. OMP_NUM_THREADS=1
mkdir -p runs/s31
# each member's whole-run meta-gradient at the default (about 23 GB at the 128x64 member)
python $S/session31/metagrad.py $D 3 > $S/session31/metagrad_default.out
# the composition distilled on mlp-family-plus: with a tensor-count input, and without (about 38 min each, together)
python $S/session31/distill.py $D $E runs/s31/distill-count.safetensors --problems 48 --rounds 3 --passes 15 > runs/s31/distill-count.out
python $S/session31/distill.py $D $E runs/s31/distill-plain.safetensors --problems 48 --rounds 3 --passes 15 --no-count-input > runs/s31/distill-plain.out
for n in count plain; do cp runs/s31/distill-$n.safetensors $S/session31/distill_$n.safetensors; cp runs/s31/distill-$n.json $S/session31/distill_$n.json; done
python $S/session6/evaluate.py $S/session31/distill_count.safetensors $S/session31/distill_plain.safetensors > $S/session31/evaluate.out
python $S/session31/heldout.py $S/session31/distill_count.safetensors,$S/session31/distill_plain.safetensors \
    24-relu-128 32-relu-256 64-relu-64 48-tanh-64 200-sigmoid-128 > $S/session31/heldout.out
python $S/session6/grid.py $S/session31/distill_count.safetensors 1x20-relu,5x20,1x20,5x300,1x40,2x20,1x60,3x20,4x20,2x100,3x120,1x1000,2x1000 $S/session31/grid_count.jsonl  # stopped before 2x1000 for time
python $S/session29/grid_table.py $S/session31/grid_count.jsonl > $S/session31/grid_count_table.md
python $S/session6/grid.py $S/session31/distill_plain.safetensors 1x20-relu,5x20,1x20,5x300 $S/session31/grid_plain.jsonl
# the count-input student with three more members whose teacher is the default: two one-tensor problems (log T = 0,
# the quadratics' value) and a deeper net (T = 18); 10 passes per round for time
X='[["linreg", {}], ["rosenbrock", {}], ["mnist_mlp", {"hidden": [16,16,16,16,16,16,16,16], "activation": "relu", "batch_size": 128}]]'
python $S/session31/distill.py $D $E runs/s31/distill-anchor.safetensors --extra "$X" --problems 48 --rounds 3 --passes 10 > runs/s31/distill-anchor.out
for n in anchor; do cp runs/s31/distill-$n.safetensors $S/session31/distill_$n.safetensors; cp runs/s31/distill-$n.json $S/session31/distill_$n.json; done
python $S/session6/evaluate.py $S/session31/distill_anchor.safetensors > $S/session31/evaluate_anchor.out
python $S/session6/grid.py $S/session31/distill_anchor.safetensors 1x20-relu,5x20,1x20,5x300 $S/session31/grid_anchor.jsonl
# the count student given two more rounds with those members
python $S/session31/distill.py $D $E runs/s31/distill-count-anchor.safetensors --init $S/session31/distill_count.safetensors \
    --extra "$X" --problems 48 --rounds 2 --passes 8 > runs/s31/distill-count-anchor.out
cp runs/s31/distill-count-anchor.safetensors $S/session31/distill_count_anchor.safetensors
cp runs/s31/distill-count-anchor.json $S/session31/distill_count_anchor.json
python $S/session6/evaluate.py $S/session31/distill_count_anchor.safetensors > $S/session31/evaluate_count_anchor.out
python $S/session6/grid.py $S/session31/distill_count_anchor.safetensors 1x20-relu,5x20,1x20,5x300 $S/session31/grid_count_anchor.jsonl
python $S/session6/grid.py $S/session31/distill_count_anchor.safetensors 1x40,2x20,1x60,3x20,4x20,2x100,3x120,1x1000 $S/session31/grid_count_anchor.jsonl  # two processes in the session
python $S/session29/grid_table.py $S/session31/grid_count_anchor.jsonl > $S/session31/grid_count_anchor_table.md
