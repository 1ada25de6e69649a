"""A candidate rule against the shipped default on small-batch MNIST MLPs that are no grid cell and no member of its
training family, on seeds outside the evaluation range: mean final training loss at 100 / 200 steps over 20 seeds,
and the candidate's paired difference from the default (mean ± standard error over the seeds).

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session29/small_batch.py WEIGHTS NET [NET ...]

NET: HIDDEN-ACTIVATION-BATCH with HIDDEN like 64 or 64x64, e.g. 64x64-relu-32 (as session28/small_batch.py, whose
output has Adam's numbers on the same seeds). Run from the repository root.
"""
import sys
import time

import torch

from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import train
from learned_optim.tasks import make_task

torch.set_num_threads(1)
rules = {"default": load_weights("default"), "candidate": load_weights(sys.argv[1])}
seeds = range(20000, 20020)  # EVAL_SEEDS is range(10000)
for net in sys.argv[2:]:
    hidden, activation, batch = net.split("-")
    task = make_task("mnist_mlp", data_root="../shared/data", hidden=tuple(int(u) for u in hidden.split("x")),
                     activation=activation, batch_size=int(batch))
    start, runs = time.time(), {}
    for name, rule in rules.items():
        runs[name] = torch.stack([train(task.sample(s), lambda p: LearnedOptimizer(p, weights=rule), 200)
                                  for s in seeds])
    parts = [f"{name} %.3f / %.3f" % (r[:, 99].mean(), r[:, 199].mean()) for name, r in runs.items()]
    diff = runs["candidate"] - runs["default"]
    se = lambda d: d.std() / len(seeds) ** 0.5
    parts.append("candidate - default %+.3f ± %.3f / %+.3f ± %.3f" % (diff[:, 99].mean(), se(diff[:, 99]),
                                                                      diff[:, 199].mean(), se(diff[:, 199])))
    print(f"{net}: " + "; ".join(parts) + f"; {time.time() - start:.0f} s", flush=True)
