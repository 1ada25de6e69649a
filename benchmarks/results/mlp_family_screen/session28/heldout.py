"""The routed composition of session 28 on one-hidden-layer nets that are neither grid cells nor the base net, on seeds
outside the evaluation range: mean final training loss at 100 / 200 steps of the default, of the composition
(B's steps on the first layer, (1 - w) A + w B on the output layer) and of Adam at 1e-3, over 20 seeds.

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session28/heldout.py A B W NET [NET ...]

NET: UNITS-ACTIVATION-BATCH, e.g. 32-relu-256 (UNITS x-separated for more hidden layers: 16x16x16-relu-128). Run from the repository root, one thread.
"""
import sys
import time

import torch

from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import train
from learned_optim.tasks import make_task

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from mix import Mix  # noqa: E402

SEEDS = range(20000, 20020)  # EVAL_SEEDS is range(10000): none of these is an evaluation seed


def held_out(factories, nets):
    """For each NET (UNITS-ACTIVATION-BATCH, UNITS one width or several joined by x), every factory's mean final loss at 100 / 200 steps over SEEDS, printed as
    the first factory's (the reference) and the others' ratios to it."""
    reference = next(iter(factories))
    for net in nets:
        units, activation, batch = net.split("-")
        task = make_task("mnist_mlp", data_root="../shared/data", hidden=tuple(map(int, units.split("x"))),
                         activation=activation,
                         batch_size=int(batch))
        start, finals = time.time(), {}
        for name, factory in factories.items():
            runs = torch.stack([train(task.sample(s), factory, 200) for s in SEEDS])
            finals[name] = (runs[:, 99].mean().item(), runs[:, 199].mean().item())
        ratios = "; ".join(f"{k} ÷ {reference} %.2f / %.2f" % tuple(x / y for x, y in zip(v, finals[reference]))
                           for k, v in finals.items() if k != reference)
        print(f"{net}: {reference} %.3f / %.3f; {ratios}; {time.time() - start:.0f} s" % finals[reference], flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    a, b, w = load_weights(sys.argv[1]), load_weights(sys.argv[2]), float(sys.argv[3])
    held_out({"default": lambda p: LearnedOptimizer(p, weights=a), "routed": lambda p: Mix(p, a, b, "1", [0, 1], w),
              "Adam 1e-3": lambda p: torch.optim.Adam(p, lr=1e-3)}, sys.argv[4:])
