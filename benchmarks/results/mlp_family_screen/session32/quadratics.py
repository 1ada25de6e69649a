"""A rule with a tensor-count input on the paper's quadratics (one tensor, T = 1) with the count clipped from below
at several values: the sum of losses over 100 steps on the 100 evaluation seeds of base_tasks.json, paired against the
committed `l2l-mlp-family-plus` (the default) and `l2l-mnist`. Session 32.

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session32/quadratics.py WEIGHTS LOW [LOW ...]

Run from the repository root.
"""
import dataclasses
import json
import sys

import torch

from benchmarks.common import mean_se
from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import compare
from learned_optim.tasks import EVAL_SEEDS, make_task

torch.set_num_threads(1)
rule = load_weights(sys.argv[1])
block = json.load(open("benchmarks/results/base_tasks.json"))["tasks"]["quadratic"]
seeds = list(EVAL_SEEDS[: len(block["results"]["LearnedOptimizer (l2l-mlp-family-plus)"]["per_seed_sum_of_losses"])])
task = make_task("quadratic")
for low in map(int, sys.argv[2:]):
    clipped = dataclasses.replace(rule, config=dataclasses.replace(rule.config, tensor_count_min=low),
                                  sha256=f"{rule.sha256}-min{low}")
    sums = compare(task, {"c": lambda p: LearnedOptimizer(p, weights=clipped)}, seeds, 100)["c"]["losses"].sum(1)
    line = [f"T read as {low}: sum %.2f ± %.2f;" % mean_se(sums)]
    for other in ("l2l-mlp-family-plus", "l2l-mnist"):
        theirs = torch.tensor(block["results"][f"LearnedOptimizer ({other})"]["per_seed_sum_of_losses"])
        line.append("vs %s %.2f: %+.2f ± %.2f;" % (other, theirs.mean(), *mean_se(sums.double() - theirs.double())))
    print(" ".join(line), flush=True)
