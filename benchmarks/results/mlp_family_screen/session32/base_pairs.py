"""Paired differences (per seed, mean ± standard error) of `l2l-mlp-distill` against every other optimizer in the
committed benchmarks/results/base_tasks.json: sum of losses and final loss, both tasks. Session 32.

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session32/base_pairs.py
"""
import json

import torch

from benchmarks.common import mean_se

tasks = json.load(open("benchmarks/results/base_tasks.json"))["tasks"]
ours = "LearnedOptimizer (l2l-mlp-distill)"
for task, block in tasks.items():
    results = block["results"]
    mine = {k: torch.tensor(results[ours][f"per_seed_{k}"], dtype=torch.float64) for k in ("sum_of_losses", "final_loss")}
    for other, r in results.items():
        if other == ours:
            continue
        diff = {k: mine[k] - torch.tensor(r[f"per_seed_{k}"], dtype=torch.float64) for k in mine}
        print(f"{task}: l2l-mlp-distill vs {other}: sum %+.2f ± %.2f, final %+.4f ± %.4f"
              % (*mean_se(diff["sum_of_losses"]), *mean_se(diff["final_loss"])))
