"""Is the averaged meta-gradient a descent direction? The rule moved along it, read on held-out problems.

    PYTHONPATH=. python .../session26/line.py WEIGHTS FAMILY OUT_DIR GRADS.pt [GRADS.pt ...]

From WEIGHTS, along three directions, each scaled to a weight-space distance d (the Euclidean norm of the move):
- "mean": minus the mean of the N per-problem meta-gradients (meta_grads.py), a full-batch gradient step;
- "adam": minus the mean divided per weight by the root mean square of the N gradients, the direction of a step of
  Adam (sign-like, with the noise in its denominator) when all N problems are averaged into one update;
- "random": a Gaussian direction (seed 0), the control for what a move of that length costs by itself.
Distances are fractions (FRACTIONS) of the distance session 25's seed-0 fine-tune travelled in 40 epochs (|depth-ctrl-e40 -
l2l-mlp-family-plus|). At each point: validation = the mean sum of losses over 100 steps on FAMILY's first 12
validation problems (metatrain.validate: the figure the fine-tunes' logs print), and the MNIST base task's sum of losses
(100 evaluation seeds) with its paired difference against WEIGHTS. Each moved rule is written to OUT_DIR.
"""

import json
import os
import sys
from pathlib import Path

import torch

from benchmarks.common import mean_se
from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import compare
from learned_optim.metatrain import MetaTrainConfig, cell_impl, validate
from learned_optim.pretrained import save_weights
from learned_optim.tasks import EVAL_SEEDS, make_task

torch.set_num_threads(1)
HERE = Path(__file__).resolve().parent
# fractions of the fine-tune's distance, per direction: the mean gradient is almost all the readout bias (snr.py),
# to which the losses are so sensitive that a move of 5% of that distance along it ruins the rule (a first run)
FRACTIONS = {"mean": (0.0002, 0.0005, 0.001, 0.002), "adam": (0.05, 0.1, 0.2, 0.4), "random": (0.05, 0.1, 0.2, 0.4)}
# LINE_FRACTIONS='{"adam": [0.004, 0.008]}' (JSON) replaces them, and runs only the directions it names
FRACTIONS = json.loads(os.environ["LINE_FRACTIONS"]) if os.environ.get("LINE_FRACTIONS") else FRACTIONS


def flat(theta, names):
    return torch.cat([theta[k].reshape(-1) for k in names])


def unflat(vector, like, names):
    out, offset = {}, 0
    for k in names:
        size = like[k].numel()
        out[k] = vector[offset : offset + size].view_as(like[k]).clone()
        offset += size
    return out


def main(weights, family, out_dir, paths):
    rule = load_weights(weights)
    data = [torch.load(p) for p in paths]
    names = data[0]["names"]
    assert all(d["sha256"] == rule.sha256 and d["names"] == names for d in data), "gradients of another rule"
    g = torch.cat([d["grads"] for d in data]).double()
    theta0 = flat(rule.theta, names).double()
    far = load_weights(HERE.parent / "session25" / "depth-ctrl-e40.safetensors")
    travelled = (flat(far.theta, names).double() - theta0).norm().item()
    mean = g.mean(0)
    directions = {"mean": -mean, "adam": -mean / (g.pow(2).mean(0).sqrt() + 1e-12),
                  "random": torch.randn(theta0.numel(), generator=torch.Generator().manual_seed(0), dtype=torch.float64)}
    directions = {k: v / v.norm() for k, v in directions.items()}
    print(f"{weights} on {family}, {g.shape[0]} problems; session 25's 40 epochs travelled {travelled:.3f}; "
          f"cosine of that move with 'mean' {torch.dot(flat(far.theta, names).double() - theta0, directions['mean']).item() / travelled:+.3f}, "
          f"with 'adam' {torch.dot(flat(far.theta, names).double() - theta0, directions['adam']).item() / travelled:+.3f}", flush=True)
    config = MetaTrainConfig(task="mixture", task_options={"family": family}, net=rule.config, steps=100, val_problems=12)
    task = make_task("mixture", data_root="../shared/data", family=family)
    mnist = make_task("mnist_mlp", data_root="../shared/data")
    seeds = list(EVAL_SEEDS[:100])
    impl = cell_impl("auto")

    def read(theta, label):
        """(validation, the base task's per-seed sums) of the rule with these weights, written as OUT_DIR/label."""
        moved = save_weights(Path(out_dir) / f"{label}.safetensors", theta, rule.config,
                             {"description": f"{weights} moved: {label} (session26/line.py)"})
        val = validate(moved.theta, config, task, impl)
        runs = compare(mnist, {"r": lambda p: LearnedOptimizer(p, weights=moved)}, seeds, 100)
        return val, runs["r"]["losses"].sum(1)

    val0, sums0 = read(rule.theta, "start")
    print(f"start: validation {val0:.2f}, MNIST {sums0.mean():.2f}", flush=True)
    for name, direction in directions.items():
        for fraction in FRACTIONS.get(name, ()):
            moved = unflat((theta0 + fraction * travelled * direction).float(), rule.theta, names)
            val, sums = read(moved, f"{name}-{fraction}")
            print(f"{name:6s} d = {fraction:g} x {travelled:.2f}: validation {val:.2f} ({val - val0:+.2f}), "
                  f"MNIST {sums.mean():.2f} ({'%+.2f ± %.2f' % mean_se(sums.double() - sums0.double())})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
