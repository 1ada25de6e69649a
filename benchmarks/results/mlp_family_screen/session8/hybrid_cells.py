"""Does the specialist's way of moving the output layer help beyond the base net? On deep_wide cells: the default
everywhere against the default everywhere but the output layer's weights, which `l2l-mnist` moves (two
LearnedOptimizers over disjoint tensors, as session6/hybrid.py). 100 steps, the first SEEDS evaluation seeds.

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session8/hybrid_cells.py SEEDS CELLS
"""
import sys
from pathlib import Path

import torch

from benchmarks import deep_wide
from benchmarks.common import mean_se
from learned_optim import load_weights
from learned_optim.baselines import compare
from learned_optim.tasks import EVAL_SEEDS, make_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from split_rules import Split  # noqa: E402

torch.set_num_threads(1)
seeds = list(EVAL_SEEDS[: int(sys.argv[1])])
rules = {"default": load_weights("default"), "l2l-mnist": load_weights("l2l-mnist")}


def output_by(params, rule):
    """The default on every tensor but the output layer's weights (the next-to-last tensor), ``rule`` on those."""
    params = list(params)
    return Split(params, [rules["default"]] * (len(params) - 2) + [rules[rule], rules["default"]])


for name in sys.argv[2].split(","):
    (layers, units, activation), = deep_wide.parse_cells(name)
    task = make_task("mnist_mlp", data_root="../shared/data", hidden=(units,) * layers, activation=activation)
    arms = {"default": lambda p: output_by(p, "default"),
            "l2l-mnist on the output weights": lambda p: output_by(p, "l2l-mnist")}
    runs = compare(task, arms, seeds, 100)
    parts = []
    for label in arms:
        losses = runs[label]["losses"]
        s, f = mean_se(losses.sum(1)), mean_se(losses[:, -1])
        parts.append(f"{label}: sum {s[0]:.2f} ± {s[1]:.2f}, final {f[0]:.3f} ± {f[1]:.3f}")
    print(f"{name}: " + "; ".join(parts), flush=True)
