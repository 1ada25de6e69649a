"""The default with LearnedOptimizer's lr below 1 on the base task (100 seeds, paired against its committed per-seed
sums) and the grid's ReLU cell (20 seeds, final loss ÷ tuned Adam's at 100 / 200 steps).

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session28/lr_base.py LR [LR ...]
"""
import json
import sys

import torch

from benchmarks.common import mean_se
from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import compare, train
from learned_optim.tasks import EVAL_SEEDS, make_task

torch.set_num_threads(1)
rule = load_weights("default")
committed = json.load(open("benchmarks/results/base_tasks.json"))["tasks"]["mnist_mlp"]["results"]
theirs = torch.tensor(committed["LearnedOptimizer (l2l-mlp-family-plus)"]["per_seed_sum_of_losses"]).double()
cell = json.load(open("benchmarks/results/levers_default.json"))["cells"]["1x20-relu"]["tuned Adam"]
base = make_task("mnist_mlp", data_root="../shared/data")
relu = make_task("mnist_mlp", data_root="../shared/data", hidden=(20,), activation="relu")
for lr in map(float, sys.argv[1:]):
    factory = lambda p: LearnedOptimizer(p, weights=rule, lr=lr)  # noqa: E731
    sums = compare(base, {"x": factory}, list(EVAL_SEEDS[: len(theirs)]), 100)["x"]["losses"].sum(1).double()
    runs = torch.stack([train(relu.sample(s), factory, 200) for s in EVAL_SEEDS[:20]])
    ratios = [runs[:, h - 1].mean().item() / cell[str(h)]["final_loss"]["mean"] for h in (100, 200)]
    print(f"lr {lr:g}: MNIST sum %.2f, vs the default (lr 1) %+.2f ± %.2f; 1x20-relu %.2f / %.2f"
          % (sums.mean(), *mean_se(sums - theirs), *ratios), flush=True)
