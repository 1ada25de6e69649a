"""Rules against `l2l-mnist` on the MNIST base task (1x20 sigmoid, batch 128, 100 steps) on evaluation seeds past the
100 that base_tasks.json holds, so that a difference of a few tenths in the sum of losses can be told from noise:
per-seed (paired) differences of the sum of losses and of the final loss, mean ± standard error. Session 32.

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session32/base_more_seeds.py START END WEIGHTS [WEIGHTS ...]

Seeds EVAL_SEEDS[START:END]. Run from the repository root, one thread.
"""
import sys
import time

import torch

from benchmarks.common import mean_se
from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import compare
from learned_optim.tasks import EVAL_SEEDS, make_task

torch.set_num_threads(1)
start, end = int(sys.argv[1]), int(sys.argv[2])
seeds = list(EVAL_SEEDS[start:end])
rules = {name: load_weights(name) for name in ["l2l-mnist"] + sys.argv[3:]}
task = make_task("mnist_mlp", data_root="../shared/data")
clock = time.time()
factories = {name: (lambda rule: lambda p: LearnedOptimizer(p, weights=rule))(rule) for name, rule in rules.items()}
losses = {name: result["losses"].double() for name, result in compare(task, factories, seeds, 100).items()}
ref = losses["l2l-mnist"]
print(f"seeds {start}-{end - 1}: l2l-mnist sum %.2f ± %.2f, final %.4f ± %.4f" % (*mean_se(ref.sum(1)), *mean_se(ref[:, -1])))
for name in sys.argv[3:]:
    own = losses[name]
    print(f"{name.rsplit('/', 1)[-1]}: sum %.2f ± %.2f, final %.4f ± %.4f; vs l2l-mnist: sum %+.2f ± %.2f, "
          "final %+.4f ± %.4f" % (*mean_se(own.sum(1)), *mean_se(own[:, -1]), *mean_se(own.sum(1) - ref.sum(1)),
                                  *mean_se(own[:, -1] - ref[:, -1])), flush=True)
print(f"{time.time() - clock:.0f} s")
