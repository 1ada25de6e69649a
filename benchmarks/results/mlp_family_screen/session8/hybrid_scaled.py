"""Step size or direction? The base net with the default on the hidden layer and `l2l-mnist` on the output layer's
weights (session 6's best hybrid, 52.43), the latter's steps scaled by a factor; and the default everywhere with its
output-weight steps scaled, for comparison. Two LearnedOptimizers over disjoint tensors (see session6/hybrid.py).

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session8/hybrid_scaled.py [SEEDS]
"""
import sys
from pathlib import Path

import torch

from benchmarks.common import mean_se
from learned_optim import load_weights
from learned_optim.baselines import compare
from learned_optim.tasks import EVAL_SEEDS, make_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from split_rules import Split  # noqa: E402

torch.set_num_threads(1)
seeds = list(EVAL_SEEDS[: int(sys.argv[1]) if len(sys.argv) > 1 else 20])
rules = {"default": load_weights("default"), "l2l-mnist": load_weights("l2l-mnist")}


task = make_task("mnist_mlp", data_root="../shared/data")
D, M = rules["default"], rules["l2l-mnist"]
arms = {f"l2l-mnist on the output weights, its steps x{k:g}": ([D, D, M, D], (1.0, 1.0, k, 1.0))
        for k in (1.0, 0.5, 0.25, 0.125)}
for label, (assign, lrs) in arms.items():
    losses = compare(task, {label: lambda p, a=assign, l=lrs: Split(p, a, l)}, seeds, 100)[label]["losses"]
    total = mean_se(losses.sum(1))
    print(f"{label}: sum {total[0]:.2f} ± {total[1]:.2f}, first 20 steps {losses[:, :20].sum(1).mean():.2f}, "
          f"final {losses[:, -1].mean():.3f}", flush=True)
