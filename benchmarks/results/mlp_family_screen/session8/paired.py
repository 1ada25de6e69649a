"""Two rules on the paper's base tasks, paired per seed: the 100 evaluation seeds of benchmarks/results/base_tasks.json,
100 steps, sum of losses; mean ± s.e. of each and of the per-seed difference B - A.

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session8/paired.py WEIGHTS_A WEIGHTS_B
"""
import sys

import torch

from benchmarks.common import mean_se
from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import compare
from learned_optim.tasks import EVAL_SEEDS, make_task

torch.set_num_threads(1)
rules = [load_weights(path) for path in sys.argv[1:3]]
for task_name in ("mnist_mlp", "quadratic"):
    task = make_task(task_name, data_root="../shared/data")
    runs = compare(task, {f"rule {i}": lambda p, r=rule: LearnedOptimizer(p, weights=r) for i, rule in enumerate(rules)},
                   list(EVAL_SEEDS[:100]), 100)
    a, b = (runs[f"rule {i}"]["losses"].sum(1).double() for i in range(2))
    print(f"{task_name}: A {rules[0].name} {mean_se(a)[0]:.2f} ± {mean_se(a)[1]:.2f}; B {rules[1].name} "
          f"{mean_se(b)[0]:.2f} ± {mean_se(b)[1]:.2f}; B - A {mean_se(b - a)[0]:+.2f} ± {mean_se(b - a)[1]:.2f}",
          flush=True)
