"""Would a step relative to each tensor's own weight scale close the base-task gap without costing deep nets?
The default rule (no retraining), one parameter group per tensor, each tensor's update multiplied at every step by
(RMS(theta_tensor) / RMS(theta_net))^b (an Adafactor-style relative step size; RMS_net over all of the net's
weights, count-weighted, so the mean multiplier stays near 1). b = 0 is the default itself. On the base net the
output layer's weights (fan-in 20) are about 6x the first layer's (fan-in 784) at initialization, so b = 1 gives
the output weights the larger steps session 8 found the specialist takes there (x4 on them alone: 61.55 -> 57.84).

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session10/relstep.py SEEDS CELLS POWERS

Sum of the first 100 training losses and final loss, mean ± s.e. over the first SEEDS evaluation seeds.

Written before the package had the option (NetConfig.relative_step, LearnedOptimizer(relative_step=b)), which also
clamps the ratio to [0.1, 10]: on these nets the ratios are about 0.9 to 6 at initialization, inside the clamp.
Outputs: relstep.out, relstep_more.out (5x300 not finished: stopped to free the CPU for the meta-training run).
"""
import sys

import torch

from benchmarks import deep_wide
from benchmarks.common import mean_se
from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import compare
from learned_optim.tasks import EVAL_SEEDS, make_task

torch.set_num_threads(1)
seeds = list(EVAL_SEEDS[: int(sys.argv[1])])
default = load_weights("default")


class Relative:
    """LearnedOptimizer (the default rule) whose per-tensor lr is (RMS_tensor / RMS_net)^power, read before each step."""

    def __init__(self, params, power):
        self.params = list(params)
        self.opt = LearnedOptimizer([{"params": [p]} for p in self.params], weights=default)
        self.power = power

    def zero_grad(self, set_to_none=True):
        self.opt.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self, closure=None):
        if self.power:
            sq = torch.stack([p.pow(2).mean() for p in self.params])
            n = torch.tensor([p.numel() for p in self.params], dtype=sq.dtype)
            net = (sq * n).sum() / n.sum()
            for group, s in zip(self.opt.param_groups, sq):
                group["lr"] = float((s / net).clamp_min(1e-12) ** (self.power / 2))
        self.opt.step()


powers = [float(b) for b in sys.argv[3].split(",")]
for name in sys.argv[2].split(","):
    (layers, units, activation), = deep_wide.parse_cells(name)
    task = make_task("mnist_mlp", data_root="../shared/data", hidden=(units,) * layers, activation=activation)
    arms = {f"b={b:g}": (lambda p, b=b: Relative(p, b)) for b in powers}
    runs = compare(task, arms, seeds, 100)
    parts = []
    for label in arms:
        losses = runs[label]["losses"]
        s, f = mean_se(losses.sum(1)), mean_se(losses[:, -1])
        parts.append(f"{label}: sum {s[0]:.2f} ± {s[1]:.2f}, final {f[0]:.3f} ± {f[1]:.3f}")
    print(f"{name}: " + "; ".join(parts), flush=True)
