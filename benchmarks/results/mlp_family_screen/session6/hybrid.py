"""Which layer's updates make the base-task gap: the 1x20 sigmoid MNIST net with one rule on some tensors and the
other rule on the rest (two LearnedOptimizers over disjoint tensors; both rules are coordinatewise and the default's
rescaling is per tensor, so each tensor takes exactly the steps it would take under its rule alone).

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session6/hybrid.py [SEEDS]

Sum of the first 100 training losses on the first SEEDS (default 20) evaluation seeds of base_tasks, mean ± s.e.
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
names = [n for n, _ in task.sample(seeds[0]).model.named_parameters()]
print("tensors:", names)
D, M = rules["default"], rules["l2l-mnist"]
arms = {
    "default everywhere": [D, D, D, D],
    "l2l-mnist everywhere": [M, M, M, M],
    "l2l-mnist on the output layer, default on the hidden": [D, D, M, M],
    "default on the output layer, l2l-mnist on the hidden": [M, M, D, D],
    "l2l-mnist on the biases only": [D, M, D, M],
    "l2l-mnist on the output bias only": [D, D, D, M],
}
arms = {label: (assign, (1.0,) * 4) for label, assign in arms.items()}
for k in (2.0, 4.0, 8.0):  # the default everywhere, its steps on the output layer's weights k times larger
    arms[f"default everywhere, output weights' lr x{k:g}"] = ([D, D, D, D], (1.0, 1.0, k, 1.0))
for label, (assign, lrs) in arms.items():
    losses = compare(task, {label: lambda p, a=assign, l=lrs: Split(p, a, l)}, seeds, 100)[label]["losses"]
    print(f"{label}: sum {mean_se(losses.sum(1))[0]:.2f} ± {mean_se(losses.sum(1))[1]:.2f}, "
          f"first 20 steps {losses[:, :20].sum(1).mean():.2f}", flush=True)
