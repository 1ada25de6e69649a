# Session 28: the commands behind the .out files here (repository root, venv active, PYTHONPATH=., OMP_NUM_THREADS=1;
# at most two at once). D = the default, E = session 15's 1x24 fine-tune, N = session 14's 1x24 specialist.
S=benchmarks/results/mlp_family_screen/session28
D=l2l-mlp-family-plus
E=benchmarks/results/mlp_family_screen/session15/u100-e40.safetensors
N=benchmarks/results/mlp_family_screen/session14/n24-rmsin.safetensors
# update-space mixing on every tensor, constant and step-dependent weights (base task on 20 seeds; ReLU cell)
python $S/mix.py $D $E "0/1" --seeds 20                                   # check: 0 is the default exactly
python $S/mix.py $D $E "0.5/0.7/1:8:0/1:16:0/1:32:0/1:100:0:lin" --seeds 20 > $S/screen_base20.out
python $S/mix.py $D $E "1:16:0/1:32:0/0.5/1:100:0:lin" --seeds 0 --cells 1x20-relu > $S/screen_relu.out
# which layer: the output layer only, the first layer only, every layer but the output
python $S/mix.py $D $E "1/0.7/1:32:0" --seeds 20 --only=-2,-1 > $S/screen_base20_out.out
python $S/mix.py $D $E "1/0.7" --seeds 0 --only=-2,-1 --cells 1x20-relu > $S/screen_relu_out.out
python $S/mix.py $D $E "1/1:32:0" --seeds 20 --only=0,1 > $S/screen_base20_first.out
python $S/mix.py $D $E "1/1:32:0" --seeds 0 --only=0,1 --cells 1x20-relu > $S/screen_relu_first.out
python $S/mix.py $D $E "1" --seeds 100 --only=0,1 --cells 5x20,1x20,3x120,5x300 > $S/first_a.out
python $S/mix.py $D $E "1" --seeds 0 --only=hidden --cells 5x20,3x120,5x300,1x20-relu > $S/hidden_a.out  # stopped after 3x120
# the first layer, and part of the output layer
for w in 0.2 0.4; do python $S/mix.py $D $E "1" --seeds 20 --only=0,1 --output-weight $w; done > $S/first_outw_base20.out
for w in 0.2 0.3; do python $S/mix.py $D $E "1" --seeds 0 --only=0,1 --output-weight $w --cells 1x20-relu; done > $S/first_outw_relu.out
python $S/mix.py $D $E "1" --seeds 0 --only=0,1 --output-weight 0.2 --cells 5x20 > $S/first_outw_5x20.out
python $S/mix.py $D $E "1" --seeds 100 --only=0,1 --output-weight 0.2 > $S/e40_first_out02_base100.out
python $S/mix.py $D $E "1" --seeds 0 --only=0,1 --output-weight 0.2 --cells 5x300,1x20,1x40,2x20,1x60,2x100,3x20,4x20,1x1000,2x1000,3x120 > $S/e40_first_out02_grid.out  # stopped before 2x1000
# the stronger specialist on the first layer
python $S/mix.py $D $N "1" --seeds 20 --only=0,1 > $S/n24_first_base20.out
python $S/mix.py $D $N "1" --seeds 20 --only=0,1 --output-weight 0.2 >> $S/n24_first_base20.out
python $S/mix.py $D $N "1" --seeds 0 --only=0,1 --cells 1x20-relu,5x20 > $S/n24_first_cells.out
python $S/mix.py $D $N "1" --seeds 100 --only=0,1 > $S/n24_first_base100.out
python $S/mix.py $D $N "1" --seeds 0 --only=0,1 --cells 5x300,1x20,1x40,2x20,1x60,2x100,3x20,4x20,1x1000,2x1000,3x120 > $S/n24_first_grid.out  # stopped before 2x1000
# the routed composition on one-hidden-layer nets that are no grid cell, seeds 20000-20019
python $S/heldout.py $D $E 0.2 32-relu-256 24-relu-128 64-relu-64 > $S/heldout_a.out
python $S/heldout.py $D $E 0.2 48-tanh-64 16-sigmoid-128 200-sigmoid-128 > $S/heldout_b.out
python $S/small_batch.py 64-relu-64 64-relu-32 20-sigmoid-32 > $S/small_batch_a.out
python $S/small_batch.py 64x64-relu-64 128-relu-64 20-relu-32 > $S/small_batch_b.out
python $S/small_batch.py 64-relu-128 64-relu-256 > $S/small_batch_c.out
python $S/small_batch.py 64-sigmoid-64 64-tanh-64 > $S/small_batch_d.out
for n in 64-relu-64 20-relu-32 128-relu-64 64-relu-128; do python $S/small_batch_lr.py $n 0.25 0.5; done > $S/small_batch_lr.out  # 64-relu-64 also at lr 2
python $S/lr_base.py 0.25 0.5 > $S/lr_base.out
