"""Per-problem meta-gradients of a rule, over whole 100-step runs, as the fine-tunes' recipe computes them.

    PYTHONPATH=. python .../session26/meta_grads.py WEIGHTS FAMILY FIRST COUNT OUT.pt [UNROLL]

For COUNT training problems of the mixture family FAMILY (seeds train_seed(seed=7, epoch=0, run=FIRST..), a seed
range no run used), the gradient of that problem's sum of losses over 100 steps with respect to the rule's weights
(metatrain.train_runs with --unroll 100, one problem per meta-update: exactly the gradient each update of the
session-25 fine-tunes used, before Adam), flattened, with each run's sum of losses. Written to OUT.pt. With UNROLL
(default 100) below 100, the run is cut into truncations of that length and the problem's gradient is the sum of the
truncations' gradients, all taken at the same rule weights (as one update per run of the truncated estimator would).
"""

import sys
import time

import torch

from learned_optim import load_weights
from learned_optim.metatrain import MetaTrainConfig, cell_impl, train_runs, train_seed
from learned_optim.tasks import make_task


class Capture(torch.optim.Optimizer):
    """A meta-optimizer that only records the gradient it is given."""

    def __init__(self, params):
        super().__init__(params, {})
        self.seen = []

    def step(self, closure=None):
        self.seen.append(torch.cat([p.grad.reshape(-1).clone() for g in self.param_groups for p in g["params"]]))


def main(weights, family, first, count, out, unroll=100):
    rule = load_weights(weights)
    config = MetaTrainConfig(task="mixture", task_options={"family": family}, net=rule.config, steps=100, unroll=unroll,
                             runs_per_epoch=1000, seed=7, val_problems=1)
    task = make_task("mixture", data_root="../shared/data", family=family)
    theta = {k: v.clone().requires_grad_(True) for k, v in rule.theta.items()}
    names = list(theta)
    grads, sums, members, seeds = [], [], [], []
    started = time.perf_counter()
    for run in range(first, first + count):
        seed = train_seed(config, 0, run)
        capture = Capture(list(theta.values()))
        stats = train_runs(theta, capture, [task.sample(seed)], config, cell_impl("auto"))
        if not capture.seen:  # the run diverged: no meta-gradient
            continue
        grads.append(torch.stack(capture.seen).sum(0))
        sums.append(stats["meta_loss_sum"])
        members.append(task.member(seed))
        seeds.append(seed)
        print(f"run {run}: member {members[-1]}, sum {sums[-1]:.2f}, |g| {grads[-1].norm():.3g}, "
              f"{time.perf_counter() - started:.0f} s", flush=True)
    torch.save({"weights": str(weights), "sha256": rule.sha256, "family": family, "names": names,
                "shapes": [tuple(theta[k].shape) for k in names], "grads": torch.stack(grads),
                "sums": torch.tensor(sums), "members": torch.tensor(members), "seeds": torch.tensor(seeds),
                "unroll": unroll}, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], *map(int, sys.argv[6:7]))
