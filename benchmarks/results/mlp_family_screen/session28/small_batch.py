"""The shipped default against Adam at 1e-3 and 3e-3 on small-batch MNIST MLPs that are no grid cell (the grid's batch
is 128), on seeds outside the evaluation range: mean final training loss at 100 / 200 steps over 20 seeds.

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session28/small_batch.py NET [NET ...]

NET: HIDDEN-ACTIVATION-BATCH with HIDDEN like 64 or 64x64, e.g. 64x64-relu-32. Run from the repository root.
"""
import sys
import time

import torch

from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import train
from learned_optim.tasks import make_task

torch.set_num_threads(1)
rule = load_weights("default")
seeds = range(20000, 20020)  # EVAL_SEEDS is range(10000)
factories = {"default": lambda p: LearnedOptimizer(p, weights=rule),
             "Adam 1e-3": lambda p: torch.optim.Adam(p, lr=1e-3), "Adam 3e-3": lambda p: torch.optim.Adam(p, lr=3e-3)}
for net in sys.argv[1:]:
    hidden, activation, batch = net.split("-")
    task = make_task("mnist_mlp", data_root="../shared/data", hidden=tuple(int(u) for u in hidden.split("x")),
                     activation=activation, batch_size=int(batch))
    start, parts = time.time(), []
    for name, factory in factories.items():
        runs = torch.stack([train(task.sample(s), factory, 200) for s in seeds])
        parts.append(f"{name} %.3f / %.3f" % (runs[:, 99].mean(), runs[:, 199].mean()))
    print(f"{net}: " + "; ".join(parts) + f"; {time.time() - start:.0f} s", flush=True)
