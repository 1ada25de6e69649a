# Session 26: the second training seed of the mlp-depth control to epoch 40, and what the meta-gradient says at the
# default. From the repository root, venv active, OMP_NUM_THREADS=1, PYTHONPATH=.; never more than two at once.
S=benchmarks/results/mlp_family_screen
# 1. seed 1 continued from its epoch-21 checkpoint (session 25) to epoch 40; its last epoch's weights
python -m learned_optim.metatrain --task mixture --family mlp-depth --grad-norm tensor --grad-norm-target 0.0015 \
  --tensor-rms-input --steps 100 --unroll 100 --runs-per-epoch 16 --val-problems 12 --lr 0.001 --epochs 40 --seed 1 \
  --keep last --init-from l2l-mlp-family-plus --device cpu --data-root ../shared/data --name depth-ctrl-s1 \
  --out runs/s25/depth-ctrl-s1.safetensors --resume          # then copied to session26/depth-ctrl-s1-e40.*
python $S/session6/evaluate.py $S/session26/depth-ctrl-s1-e40.safetensors            # depth-ctrl-s1-e40_evaluate.out
python $S/session6/grid.py $S/session26/depth-ctrl-s1-e40.safetensors 1x20-relu,5x20,5x300 runs/s26/grid-s1-e40.jsonl
python $S/session25/compare_default.py $S/session26/depth-ctrl-s1-e40_cells.jsonl   # depth-ctrl-s1-e40_compare_default.out
# 2. per-problem first-order meta-gradients at the default on mlp-depth (192 problems, two processes)
python $S/session26/meta_grads.py l2l-mlp-family-plus mlp-depth 0 96 runs/s26/mg_default_depth_a.pt
python $S/session26/meta_grads.py l2l-mlp-family-plus mlp-depth 96 96 runs/s26/mg_default_depth_b.pt
python $S/session26/snr.py runs/s26/mg_default_depth_a.pt runs/s26/mg_default_depth_b.pt    # snr_first_order.out
# 3. the rule moved along the averaged directions (the first 96 problems; then all 192 at small distances)
python $S/session26/line.py l2l-mlp-family-plus mlp-depth runs/s26/line_a runs/s26/mg_default_depth_a.pt  # line_first_order.out
LINE_FRACTIONS='{"adam": [0.004, 0.008, 0.015, 0.03], "random": [0.008, 0.03]}' python $S/session26/line.py \
  l2l-mlp-family-plus mlp-depth runs/s26/line_small runs/s26/mg_default_depth_a.pt runs/s26/mg_default_depth_b.pt  # line_first_order_small.out
# 4. first-order slopes against finite differences (24 problems), and exact gradients (48 problems; about 10 GB)
python $S/session26/fd.py l2l-mlp-family-plus runs/s26/mg_default_depth_a.pt 24     # fd_first_order.out
python $S/session26/exact.py l2l-mlp-family-plus runs/s26/mg_default_depth_a.pt 0 48 runs/s26/exact_a0.pt  # exact.out
python $S/session26/exact_summary.py $S/session26/exact.out                            # exact_summary.out
# 5. the validation and the base task at random points near the default
python $S/session26/rough.py l2l-mlp-family-plus mlp-depth 6 1e-4    # rough_1e-4.out
python $S/session26/rough.py l2l-mlp-family-plus mlp-depth 6 1e-2    # rough_1e-2.out
# 6. the same with 20-step truncations (the estimator l2l-mlp-family was trained with): 96 problems, the sum of each
#    run's five truncation gradients at the default's weights
python $S/session26/meta_grads.py l2l-mlp-family-plus mlp-depth 0 48 runs/s26/mg20_a.pt 20
python $S/session26/meta_grads.py l2l-mlp-family-plus mlp-depth 48 48 runs/s26/mg20_b.pt 20
python $S/session26/snr.py runs/s26/mg20_a.pt runs/s26/mg20_b.pt                        # snr_unroll20.out
LINE_FRACTIONS='{"adam": [0.004, 0.015, 0.05]}' python $S/session26/line.py l2l-mlp-family-plus mlp-depth \
  runs/s26/line20a runs/s26/mg20_a.pt runs/s26/mg20_b.pt
LINE_FRACTIONS='{"mean": [0.0005, 0.002], "adam": [0.03, 0.1]}' python $S/session26/line.py l2l-mlp-family-plus \
  mlp-depth runs/s26/line20b runs/s26/mg20_a.pt runs/s26/mg20_b.pt                     # both: line_unroll20.out
