"""The default with its step multiplied by lr (LearnedOptimizer's lr) on small-batch ReLU nets: is its loss there a
step size? Mean final training loss at 100 / 200 steps, 20 seeds 20000-20019.

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session28/small_batch_lr.py NET LR [LR ...]
"""
import sys

import torch

from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import train
from learned_optim.tasks import make_task

torch.set_num_threads(1)
rule = load_weights("default")
hidden, activation, batch = sys.argv[1].split("-")
task = make_task("mnist_mlp", data_root="../shared/data", hidden=tuple(int(u) for u in hidden.split("x")),
                 activation=activation, batch_size=int(batch))
for lr in map(float, sys.argv[2:]):
    runs = torch.stack([train(task.sample(s), lambda p: LearnedOptimizer(p, weights=rule, lr=lr), 200)
                        for s in range(20000, 20020)])
    print(f"{sys.argv[1]} lr {lr:g}: %.3f / %.3f" % (runs[:, 99].mean(), runs[:, 199].mean()), flush=True)
