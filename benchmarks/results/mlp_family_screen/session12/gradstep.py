"""Would a step relative to each tensor's *gradient* scale give a trained rule the specialist's output-layer steps?

The base task favours steps that grow with the raw gradient: tuned Nesterov momentum on raw gradients (lr 0.3)
sums 58.80 against tuned Adam's 81.29 (benchmarks/results/base_tasks.json), and `l2l-mnist`, trained on raw
gradients, moves the output layer's weights about 10x as far as the default (session 8), whose per-tensor
normalization shows every tensor's gradient at one scale. Here a trained rule (no retraining), one parameter
group per tensor, has each tensor's update multiplied before every step by

    clamp(RMS(g_tensor) / RMS(g_net), 0.1, 10)^c * clamp(RMS(w_tensor) / RMS(w_net), 0.1, 10)^b

(RMS_net over all of the net's coordinates, count-weighted; the second factor is the package's relative_step b, set
here by hand so that both read the same tensors). c = 0 and b = 0 is the rule itself.

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session12/gradstep.py RULE SEEDS STEPS CELLS ARMS

RULE: a weight file or shipped name; ARMS: c:b pairs, comma-separated, e.g. 0:0,1:0,0.5:0.5. Sum of the first
STEPS training losses and the final loss, mean ± s.e. over the first SEEDS evaluation seeds of deep_wide.
"""
import sys

import torch

from benchmarks import deep_wide
from benchmarks.common import mean_se
from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import compare
from learned_optim.tasks import EVAL_SEEDS, make_task

torch.set_num_threads(1)
rule = load_weights(sys.argv[1])
seeds = list(EVAL_SEEDS[: int(sys.argv[2])])
steps = int(sys.argv[3])


def ratios(tensors):
    sq = torch.stack([t.double().pow(2).mean() for t in tensors])
    n = torch.tensor([t.numel() for t in tensors], dtype=sq.dtype)
    net = (sq * n).sum() / n.sum()
    return (sq / net.clamp_min(1e-300)).sqrt().clamp(0.1, 10.0)


class Scaled:
    def __init__(self, params, c, b):
        self.params = list(params)
        self.opt = LearnedOptimizer([{"params": [p]} for p in self.params], weights=rule)
        self.c, self.b = c, b

    def zero_grad(self, set_to_none=True):
        self.opt.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self, closure=None):
        factor = torch.ones(len(self.params), dtype=torch.float64)
        if self.c:
            factor *= ratios([p.grad for p in self.params]) ** self.c
        if self.b:
            factor *= ratios(self.params) ** self.b
        for group, f in zip(self.opt.param_groups, factor.tolist()):
            group["lr"] = f
        self.opt.step()


arms = [tuple(float(x) for x in arm.split(":")) for arm in sys.argv[5].split(",")]
for name in sys.argv[4].split(","):
    (layers, units, activation), = deep_wide.parse_cells(name)
    task = make_task("mnist_mlp", data_root="../shared/data", hidden=(units,) * layers, activation=activation)
    runs = compare(task, {f"c={c:g},b={b:g}": (lambda p, c=c, b=b: Scaled(p, c, b)) for c, b in arms}, seeds, steps)
    parts = []
    for label, run in runs.items():
        s, f = mean_se(run["losses"].sum(1)), mean_se(run["losses"][:, -1])
        parts.append(f"{label}: sum {s[0]:.2f} ± {s[1]:.2f}, final {f[0]:.3f} ± {f[1]:.3f}")
    print(f"{name} ({steps} steps): " + "; ".join(parts), flush=True)
