#!/usr/bin/env bash
# Session 32: the tensor-count input clipped to the training members' range (NetConfig.tensor_count_min / max), on
# session 31's distilled rule; distillation as a package stage (python -m learned_optim.distill). From the repository
# root, one thread per process.
set -euo pipefail
S=benchmarks/results/mlp_family_screen
D=pretrained/l2l-mlp-family-plus.safetensors
E=$S/session15/u100-e40.safetensors
export PYTHONPATH=. OMP_NUM_THREADS=1
mkdir -p runs/s32
# the package's distillation is session 31's script: the same bytes on a short recipe
python $S/session31/distill.py $D $E runs/s32/eq_script.safetensors --problems 3 --rounds 2 --passes 2 --coords 100 --steps 10
python -m learned_optim.distill --base $D --specialist $E --out runs/s32/eq_pkg.safetensors --problems 3 --rounds 2 \
    --passes 2 --coords 100 --steps 10 --data-root ../shared/data
# session 31's count student read with T clipped to [4, inf) and to [4, 10] (its members showed T = 4 to 10)
python $S/session32/clip.py $S/session31/distill_count.safetensors $S/session32/count_4.safetensors 4 0
python $S/session32/clip.py $S/session31/distill_count.safetensors $S/session32/count_4_10.safetensors 4 10
python $S/session6/evaluate.py $S/session32/count_4.safetensors > $S/session32/evaluate.out
python $S/session6/grid.py $S/session31/distill_count.safetensors 2x1000 $S/session32/grid_count_2x1000.jsonl  # T = 6: clipping changes nothing
python $S/session6/grid.py $S/session32/count_4_10.safetensors 5x20,5x300 $S/session32/grid_4_10.jsonl  # T = 12, read as 10
python $S/session32/quadratics.py $S/session31/distill_count.safetensors 1 2 3 4 6 10 > $S/session32/quadratics.out
cat $S/session31/grid_count.jsonl $S/session32/grid_count_2x1000.jsonl > /tmp/gc.jsonl; python $S/session29/grid_table.py /tmp/gc.jsonl > $S/session32/grid_count_4_table.md  # all 13 cells
python $S/session31/heldout.py $S/session32/count_4.safetensors,$S/session32/count_4_10.safetensors 6x32-relu-128 8x24-sigmoid-128 10x32-tanh-128 > $S/session32/heldout_deep.out  # T = 14, 18, 22
python $S/session32/base_more_seeds.py 100 600 l2l-mlp-family-plus $S/session32/count_4.safetensors > $S/session32/base_more_seeds.out
# a stronger teacher (output-layer share 0.5) with four one-layer ReLU / tanh members taught the default's steps, from
# the count student (session 31's script as it was before the package module; 2 rounds x 8 passes)
X='[["mnist_mlp", {"hidden": [16], "activation": "relu", "batch_size": 128}], ["mnist_mlp", {"hidden": [40], "activation": "relu", "batch_size": 64}], ["mnist_mlp", {"hidden": [96], "activation": "relu", "batch_size": 128}], ["mnist_mlp", {"hidden": [32], "activation": "tanh", "batch_size": 128}]]'
python $S/session31/distill.py $D $E runs/s32/distill-w5.safetensors --init $S/session31/distill_count.safetensors --output-weight 0.5 --extra "$X" --problems 48 --rounds 2 --passes 8 > $S/session32/distill_w5.log
python $S/session32/clip.py runs/s32/distill-w5.safetensors runs/s32/w5_4.safetensors 4 0
python $S/session6/evaluate.py runs/s32/w5_4.safetensors > $S/session32/evaluate_w5.out
# the shipped default, by its recipe (step 2; the committed specialist): the same tensors as session31/distill_count
bash recipes/l2l-mlp-distill.sh ../shared/data runs/s32
# after the switch: the new default against the previous one and Adam outside the grid. In cnn.out "default" is
# l2l-mlp-distill (the alias) and "candidate" l2l-mlp-family-plus; small_batch.py runs the default alone
python $S/session29/cnn.py l2l-mlp-family-plus 100 32 > $S/session32/cnn.out
python $S/session28/small_batch.py 64-relu-64 64-relu-32 20-relu-32 64x64-relu-64 128-relu-64 > $S/session32/small_batch.out
# the benchmarks the default appears in
python -m benchmarks.levers --levers distill --cells 2x1000,1x20,1x40,2x20,1x60,3x20,4x20 --report levers_distill_a --data-root ../shared/data  # two processes;
python -m benchmarks.levers --levers distill --cells 1x1000,5x300,2x100,3x120,5x20,1x20-relu --report levers_distill_b --data-root ../shared/data  # their reports not kept
python -m benchmarks.levers --levers l2l-mnist,family-plus-30,distill --reuse-reports --report levers_distill --data-root ../shared/data
python -m benchmarks.base_tasks --data-root ../shared/data
python -m learned_optim.analyze l2l-mlp-distill --task mnist_mlp --search-samples 20 --data-root ../shared/data --out benchmarks/results/analysis/l2l-mlp-distill
python -m benchmarks.step_cost --weights l2l-mlp-distill --out benchmarks/results/step_cost_rules/l2l-mlp-distill  # CPU idle
python $S/session32/base_pairs.py > $S/session32/base_pairs.out  # paired, from the rerun base_tasks.json
