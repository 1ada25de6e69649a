"""Does a rule with net_scale_input use it? (1) the norms of layer 0's input weights per input column; (2) the rule on
the MNIST base task (1x20 sigmoid) and on a 3x20 net with its net-level value replaced by a constant, against the
value LearnedOptimizer computes (paired per seed, first N evaluation seeds, 100 steps, sum of losses).

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session9/probe.py WEIGHTS N [CONSTANTS...]
"""
import sys

import torch

from benchmarks.common import mean_se
from learned_optim import LearnedOptimizer, load_weights
from learned_optim import optimizer as optimizer_module
from learned_optim.baselines import compare
from learned_optim.features import tensor_input_values
from learned_optim.tasks import EVAL_SEEDS, make_task

torch.set_num_threads(1)
rule = load_weights(sys.argv[1])
n = int(sys.argv[2])
constants = [float(c) for c in sys.argv[3:]] or [0.0, 0.03, 0.15, 0.3, 0.6]
config = rule.config
assert config.net_scale_input, "a rule with net_scale_input"
w = rule.theta["cells.0.w_ih"]
names = ["sign or log|g|", "g"] + ["tensor_rms_ratio"] * config.tensor_rms_input + ["net_scale"]
print("layer-0 input weight norms: " + ", ".join(f"{name} {float(w[:, i].norm()):.3f}" for i, name in enumerate(names)))


def forced(value):
    def values(stats, cfg, whole=None):
        rows = tensor_input_values(stats, cfg, whole)
        return None if rows is None else [row[:-1] + (value,) for row in rows]
    return values


for task_name, options in (("mnist_mlp", {}), ("mnist_mlp", {"hidden": [20, 20, 20]})):
    task = make_task(task_name, data_root="../shared/data", **options)
    seeds = list(EVAL_SEEDS[:n])
    base = compare(task, {"computed": lambda p: LearnedOptimizer(p, weights=rule)}, seeds, 100)["computed"]["losses"]
    base = base.sum(1).double()
    line = [f"computed {mean_se(base)[0]:.2f} ± {mean_se(base)[1]:.2f}"]
    for c in constants:
        optimizer_module.tensor_input_values = forced(c)
        try:
            runs = compare(task, {"forced": lambda p: LearnedOptimizer(p, weights=rule)}, seeds, 100)
        finally:
            optimizer_module.tensor_input_values = tensor_input_values
        d = runs["forced"]["losses"].sum(1).double() - base
        line.append(f"net_scale={c:g}: {mean_se(d)[0]:+.2f} ± {mean_se(d)[1]:.2f}")
    print(f"{task_name} {options.get('hidden', [20])}: " + "; ".join(line), flush=True)
