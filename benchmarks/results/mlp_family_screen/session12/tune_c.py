"""grad_relative_step's power c for a trained rule, chosen without evaluation models or seeds: the default rule on
each member net of its meta-training family (mlp-family, none a deep_wide cell), on the first SEEDS tuning seeds
(tasks.TUNING_SEEDS, disjoint from the evaluation seeds), STEPS steps, each c against c = 0 as the ratio of mean sums
of losses (below 1: c helps).

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session12/tune_c.py RULE SEEDS STEPS C1,C2,...
"""
import sys

import torch

from benchmarks.common import mean_se
from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import compare
from learned_optim.tasks import TUNING_SEEDS, make_task
from learned_optim.tasks.mixture import FAMILIES

torch.set_num_threads(1)
rule = load_weights(sys.argv[1])
seeds, steps = list(TUNING_SEEDS[: int(sys.argv[2])]), int(sys.argv[3])
powers = [float(c) for c in sys.argv[4].split(",")]
ratios = {c: [] for c in powers}
for name, options in FAMILIES["mlp-family"]:
    task = make_task(name, data_root="../shared/data", **options)
    arms = {c: (lambda p, c=c: LearnedOptimizer(p, weights=rule, grad_relative_step=c)) for c in [0.0] + powers}
    runs = compare(task, {f"c={c:g}": make for c, make in arms.items()}, seeds, steps)
    base = runs["c=0"]["losses"].sum(1)
    parts = ["c=0 %.2f ± %.2f" % mean_se(base)]
    for c in powers:
        sums = runs[f"c={c:g}"]["losses"].sum(1)
        ratios[c].append(float(sums.mean() / base.mean()))
        parts.append("c=%g %.2f ± %.2f (%.3f)" % (c, *mean_se(sums), ratios[c][-1]))
    print(f"{options['hidden']} {options['activation']} b{options['batch_size']}: " + "; ".join(parts), flush=True)
for c in powers:
    r = torch.tensor(ratios[c])
    print(f"c={c:g}: geometric mean ratio {float(r.log().mean().exp()):.3f}, worst {float(r.max()):.3f}, "
          f"members helped {int((r < 1).sum())} of {len(r)}")
