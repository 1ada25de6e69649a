# Session 27: the evolution-strategies meta-gradient (metatrain --meta-grad es) at the default, against the first-order
# one of session 26 on the same problems. From the repository root, venv active, OMP_NUM_THREADS=1, PYTHONPATH=.;
# never more than two at once. runs/ is git-ignored; session 26's runs/s26/mg_default_depth_a.pt comes from its runs.sh.
S=benchmarks/results/mlp_family_screen
# 1. per-problem ES estimates at the default: session 26's first 96 problems of mlp-depth, 12 pairs each, sigma 1e-3
python $S/session27/es_grads.py l2l-mlp-family-plus mlp-depth 0 48 12 0.001 runs/s27/es_a.pt    # es_a.log
python $S/session27/es_grads.py l2l-mlp-family-plus mlp-depth 48 48 12 0.001 runs/s27/es_b.pt   # es_b.log
# 2. against the first-order gradients of the same problems; writes runs/s27/es-{raw,clipped,ranks}.pt
python $S/session27/es_compare.py runs/s27/es runs/s26/mg_default_depth_a.pt runs/s27/es_a.pt runs/s27/es_b.pt  # es_compare.out
