"""A candidate rule on the paper's two base tasks, paired with the committed per-seed results of the shipped rules.

    python benchmarks/results/mlp_family_screen/session6/evaluate.py WEIGHTS [WEIGHTS ...]

For each weight file: 100 steps on the 100 evaluation seeds of benchmarks/results/base_tasks.json (the same problems),
sum of losses and final loss, and the per-seed difference of the sum against `l2l-mlp-family`, `l2l-mlp-family-plus` (the
defaults before and since session 21) and `l2l-mnist` (MNIST) / `l2l-quadratic` (quadratics), mean ± standard error. The candidate's own grad_norm settings
come from its card (LearnedOptimizer reads grad_norm_power since session 6). Run from the repository root.
"""
import json
import sys
import time

import torch

from benchmarks.common import mean_se
from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import compare
from learned_optim.tasks import EVAL_SEEDS, make_task

torch.set_num_threads(1)
committed = json.load(open("benchmarks/results/base_tasks.json"))["tasks"]
for path in sys.argv[1:]:
    rule = load_weights(path)
    for task_name, specialist in (("mnist_mlp", "l2l-mnist"), ("quadratic", "l2l-quadratic")):
        block = committed[task_name]
        seeds = list(EVAL_SEEDS[: len(block["results"]["LearnedOptimizer (l2l-mlp-family)"]["per_seed_sum_of_losses"])])
        task = make_task(task_name, data_root="../shared/data")
        start = time.time()
        losses = compare(task, {"candidate": lambda p: LearnedOptimizer(p, weights=rule)}, seeds, 100)["candidate"]["losses"]
        sums = losses.sum(1)
        line = [f"{path.split('/')[-1]} (grad_norm_power {rule.config.grad_norm_power}) {task_name}:",
                "sum %.2f ± %.2f, final %.3f ± %.3f;" % (*mean_se(sums), *mean_se(losses[:, -1]))]
        for other in ("l2l-mlp-family", "l2l-mlp-family-plus", specialist):  # the two defaults, then the specialist
            if f"LearnedOptimizer ({other})" not in block["results"]:  # base_tasks.json before session 21
                continue
            theirs = torch.tensor(block["results"][f"LearnedOptimizer ({other})"]["per_seed_sum_of_losses"])
            line.append("vs %s %.2f: %+.2f ± %.2f;" % (other, theirs.mean(), *mean_se(sums.double() - theirs.double())))
        print(" ".join(line) + f" {time.time() - start:.0f} s", flush=True)
