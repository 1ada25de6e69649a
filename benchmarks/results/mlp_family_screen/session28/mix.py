"""Two rules mixed in update space, with a weight that may change with the step: a diagnostic, not a shipped rule.

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session28/mix.py A B SCHEDULE [--seeds N] [--cells C,...] [--only I,...]

Both rules run on the same gradients from the same parameters, each with its own state; the step taken is
(1 - a_t) * (A's step) + a_t * (B's step). SCHEDULE: "a" (constant), or "a0:T:a1" (a0 for steps t < T, a1 after),
or "a0:T:a1:lin" (a0 at step 0 going linearly to a1 at step T, a1 after). With a constant weight this is exactly one
coordinatewise LSTM with twice the hidden units (block-diagonal weights, the readout mixing the two halves).

Prints the base task (MNIST 1x20 sigmoid, the first N evaluation seeds of base_tasks.json, sum of the 100 losses,
paired against the committed per-seed sums of `l2l-mlp-family-plus` and `l2l-mnist`) and, for each cell, the final
loss at 100 / 200 steps over tuned Adam's in levers_default.json (20 evaluation seeds). Run from the repository root.
"""
import argparse
import json
import time

import torch

from benchmarks import deep_wide
from benchmarks.common import mean_se
from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import compare, train_and_evaluate
from learned_optim.tasks import EVAL_SEEDS, make_task


def weight_at(schedule: str, t: int) -> float:
    parts = schedule.split(":")
    if len(parts) == 1:
        return float(parts[0])
    a0, until, a1 = float(parts[0]), int(parts[1]), float(parts[2])
    if len(parts) == 4 and parts[3] == "lin":
        return a0 + (a1 - a0) * min(t, until) / until
    return a0 if t < until else a1


class Mix:
    """Just enough of torch.optim.Optimizer for baselines.train_and_evaluate."""

    def __init__(self, params, a, b, schedule, only=None, output_weight=0.0):
        self.params = [p for p in params]
        # only: which tensors mix (indices into the parameter list, negative from the end); the rest take A's step
        n = len(self.params)
        if only == "hidden":  # every tensor but the output layer's weight and bias
            self.mixed = set(range(n - 2))
        else:
            self.mixed = set(range(n)) if only is None else {i % n for i in only}
        self.first, self.second = LearnedOptimizer(self.params, weights=a), LearnedOptimizer(self.params, weights=b)
        self.schedule, self.t, self.output_weight = schedule, 0, output_weight

    def zero_grad(self, set_to_none=True):
        self.first.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self):
        start = [p.detach().clone() for p in self.params]
        self.first.step()
        moved = [p.detach() - s for p, s in zip(self.params, start)]
        for p, s in zip(self.params, start):
            p.copy_(s)
        self.second.step()
        w = weight_at(self.schedule, self.t)
        for i, (p, s, d) in enumerate(zip(self.params, start, moved)):
            v = w if i in self.mixed else self.output_weight if i >= len(self.params) - 2 else 0.0
            p.copy_(s + (1 - v) * d + v * (p - s))
        self.t += 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("schedules", help="schedules separated by '/'")
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--cells", default="")
    parser.add_argument("--only", default="", help="comma-separated tensor indices that mix (e.g. -2,-1: the output layer; 0,1: the first), or 'hidden'")
    parser.add_argument("--output-weight", type=float, default=0.0, help="B's constant weight on the output layer's "
                        "two tensors where --only leaves them out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    a, b = load_weights(args.a), load_weights(args.b)
    committed = json.load(open("benchmarks/results/base_tasks.json"))["tasks"]["mnist_mlp"]["results"]
    cells = json.load(open("benchmarks/results/levers_default.json"))["cells"]
    for schedule in args.schedules.split("/"):
        only = None if not args.only else args.only if args.only == "hidden" else [int(i) for i in args.only.split(",")]
        factory = lambda p: Mix(p, a, b, schedule, only, args.output_weight)  # noqa: E731
        if args.seeds:
            start = time.time()
            task = make_task("mnist_mlp", data_root="../shared/data")
            seeds = list(EVAL_SEEDS[: args.seeds])
            losses = compare(task, {"mix": factory}, seeds, 100)["mix"]["losses"]
            sums = losses.sum(1).double()
            line = [f"{schedule}: MNIST sum %.2f ± %.2f, final %.3f;" % (*mean_se(sums), losses[:, -1].mean())]
            for other in ("l2l-mlp-family-plus", "l2l-mnist"):
                theirs = torch.tensor(committed[f"LearnedOptimizer ({other})"]["per_seed_sum_of_losses"][: args.seeds])
                line.append("vs %s %+.2f ± %.2f;" % (other, *mean_se(sums - theirs.double())))
            print(" ".join(line) + f" {time.time() - start:.0f} s", flush=True)
        for name in filter(None, args.cells.split(",")):
            start = time.time()
            (layers, units, activation), = deep_wide.parse_cells(name)
            task = make_task("mnist_mlp", data_root="../shared/data", hidden=(units,) * layers, activation=activation)
            runs = torch.stack([train_and_evaluate(task.sample(s), factory, 200)[0] for s in EVAL_SEEDS[:20]])
            parts = []
            for h in (100, 200):
                tuned = cells[name]["tuned Adam"][str(h)]["final_loss"]["mean"]
                adam = cells[name]["Adam 1e-3"][str(h)]["final_loss"]["mean"] if "Adam 1e-3" in cells[name] else float("nan")
                parts.append("%d: %.2f (Adam 1e-3 %.2f)" % (h, runs[:, h - 1].mean() / tuned, adam / tuned))
            print(f"  {schedule} {name}: " + "; ".join(parts) + f"; {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
