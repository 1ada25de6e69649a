"""Is the base-task gap the default's slow start on the output layer? The default rule on the base net (1x20
sigmoid MNIST) with its steps on some tensors multiplied by a factor k(t) that depends on the step t (the rule's
per-tensor rescaling makes each tensor's steps independent of the others' multipliers; k scales the update, as
LearnedOptimizer's per-group lr does).

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session8/warmup.py [SEEDS]

Sum of the first 100 training losses on the first SEEDS (default 20) evaluation seeds, mean ± s.e.
"""
import sys

import torch

from benchmarks.common import mean_se
from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import compare
from learned_optim.tasks import EVAL_SEEDS, make_task

torch.set_num_threads(1)
seeds = list(EVAL_SEEDS[: int(sys.argv[1]) if len(sys.argv) > 1 else 20])
default = load_weights("default")


class Scheduled:
    """LearnedOptimizer with one group per tensor; ``factors[i](t)`` multiplies tensor i's update at step t."""

    def __init__(self, params, factors):
        self.opt = LearnedOptimizer([{"params": [p]} for p in params], weights=default)
        self.factors, self.t = factors, 0

    def zero_grad(self, set_to_none=True):
        self.opt.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        for group, f in zip(self.opt.param_groups, self.factors):
            group["lr"] = f(self.t)
        self.opt.step()
        self.t += 1


one = lambda t: 1.0  # noqa: E731


def early(k, until):
    return lambda t: k if t < until else 1.0


def decaying(k, until):  # k at step 0, geometric down to 1 at step `until`
    return lambda t: k ** max(0.0, 1 - t / until)


task = make_task("mnist_mlp", data_root="../shared/data")
arms = {  # factors for (hidden weight, hidden bias, output weight, output bias)
    "default": (one, one, one, one),
    "output weights x4 throughout": (one, one, lambda t: 4.0, one),
    "output weights x8 for t < 10": (one, one, early(8, 10), one),
    "output weights x8 for t < 20": (one, one, early(8, 20), one),
    "output weights x8 decaying to x1 at t = 20": (one, one, decaying(8, 20), one),
    "output weights x16 decaying to x1 at t = 20": (one, one, decaying(16, 20), one),
    "output weights x8 decaying to x1 at t = 40": (one, one, decaying(8, 40), one),
    "output layer (weights, bias) x8 decaying to x1 at t = 20": (one, one, decaying(8, 20), decaying(8, 20)),
    "every tensor x4 decaying to x1 at t = 20": (decaying(4, 20),) * 4,
    "hidden weights x4 decaying, output weights x8 decaying (t = 20)": (decaying(4, 20), one, decaying(8, 20), one),
}
for label, factors in arms.items():
    losses = compare(task, {label: lambda p, f=factors: Scheduled(p, f)}, seeds, 100)[label]["losses"]
    total = mean_se(losses.sum(1))
    print(f"{label}: sum {total[0]:.2f} ± {total[1]:.2f}, first 20 steps {losses[:, :20].sum(1).mean():.2f}, "
          f"final {losses[:, -1].mean():.3f}", flush=True)
