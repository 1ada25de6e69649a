"""The shipped default, a candidate rule and Adam at 1e-3 and 3e-3 on the paper's MNIST CNN (the `mnist_cnn` task: no
grid cell, no member of either rule's training family) at several batch sizes, 10 seeds outside the evaluation range
(20000-20009): mean final training loss at 100 / 200 steps ± its standard error over the seeds.

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session29/cnn.py WEIGHTS BATCH [BATCH ...]

Run from the repository root.
"""
import sys
import time

import torch

from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import train
from learned_optim.tasks import make_task

torch.set_num_threads(1)
default, candidate = load_weights("default"), load_weights(sys.argv[1])
seeds = range(20000, 20010)
factories = {"default": lambda p: LearnedOptimizer(p, weights=default),
             "candidate": lambda p: LearnedOptimizer(p, weights=candidate),
             "Adam 1e-3": lambda p: torch.optim.Adam(p, lr=1e-3), "Adam 3e-3": lambda p: torch.optim.Adam(p, lr=3e-3)}
for batch in sys.argv[2:]:
    task = make_task("mnist_cnn", data_root="../shared/data", batch_size=int(batch))
    start, parts = time.time(), []
    for name, factory in factories.items():
        runs = torch.stack([train(task.sample(s), factory, 200) for s in seeds])
        se = runs.std(dim=0) / len(seeds) ** 0.5
        parts.append(f"{name} %.3f ± %.3f / %.3f ± %.3f" % (runs[:, 99].mean(), se[99], runs[:, 199].mean(), se[199]))
    print(f"mnist_cnn batch {batch}: " + "; ".join(parts) + f"; {time.time() - start:.0f} s", flush=True)
