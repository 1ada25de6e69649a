"""Rules against the default on one-hidden-layer nets that are neither grid cells nor the base net (session 28's
held-out nets), on seeds outside the evaluation range: mean final training loss at 100 / 200 steps, each rule's as a
ratio to the default's, and Adam at 1e-3's, over 20 seeds.

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session31/heldout.py WEIGHTS[,WEIGHTS...] NET [NET ...]

NET: UNITS-ACTIVATION-BATCH, e.g. 32-relu-256. Run from the repository root, one thread.
"""
import sys
import time

import torch

from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import train
from learned_optim.tasks import make_task

torch.set_num_threads(1)
seeds = range(20000, 20020)  # EVAL_SEEDS is range(10000): none of these is an evaluation seed
default = load_weights("l2l-mlp-family-plus")
factories = {"default": lambda p: LearnedOptimizer(p, weights=default)}
for path in sys.argv[1].split(","):
    factories[path.rsplit("/", 1)[-1]] = (lambda rule: lambda p: LearnedOptimizer(p, weights=rule))(load_weights(path))
factories["Adam 1e-3"] = lambda p: torch.optim.Adam(p, lr=1e-3)
for net in sys.argv[2:]:
    units, activation, batch = net.split("-")
    task = make_task("mnist_mlp", data_root="../shared/data", hidden=(int(units),), activation=activation,
                     batch_size=int(batch))
    start, finals = time.time(), {}
    for name, factory in factories.items():
        runs = torch.stack([train(task.sample(s), factory, 200) for s in seeds])
        finals[name] = (runs[:, 99].mean().item(), runs[:, 199].mean().item())
    ratios = "; ".join(f"{k} ÷ default %.2f / %.2f" % tuple(x / y for x, y in zip(v, finals["default"]))
                       for k, v in finals.items() if k != "default")
    print(f"{net}: default %.3f / %.3f; {ratios}; {time.time() - start:.0f} s" % finals["default"], flush=True)
