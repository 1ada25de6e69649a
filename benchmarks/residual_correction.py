"""What a "residual" rule's learned correction does on long runs: the rule as shipped against the same rule with its
correction set to zero.

    python -m benchmarks.residual_correction --data-root ../shared/data
    python -m benchmarks.residual_correction --quick

A "residual" rule (nets.py) steps by -step · exp(s) · (m̂/√v̂ + d): Adam's direction plus a correction d that its
LSTM reads out beside the step size s. With d set to zero (readout row 0's weights and bias) the same network only scales
Adam's direction. Two parts, both variants on the same seeds:

- tasks: every task of --tasks (default: the suite's development part) for --steps steps. Final training loss, the
  test metric, and the mean cosine between consecutive full gradients over the last 50 steps (-1: a period-2
  oscillation across a valley; near 0: noise; near +1: steady descent).
- floor: full-batch regression (regression_fullbatch) for --floor-steps steps with lr times 1, 1/3 and 1/10: where
  the loss can go far below its start, does a run keep descending, or end in an oscillation across a valley, and does
  a smaller step change which?
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

from learned_optim import LearnedOptimizer, load_weights
from learned_optim.pretrained import RuleWeights
from learned_optim.tasks import EVAL_SEEDS, PARTS, SUITE, make_task

from .common import add_out_argument, fmt, markdown_table, mean_se, progress, provenance, resolve_out, write_json

WINDOW = 50  # last steps over which consecutive gradients are compared
FLOOR_TASK = "regression_fullbatch"
FLOOR_LRS = (1.0, 1 / 3, 0.1)
VARIANTS = ("shipped", "correction off")


def without_correction(weights: RuleWeights) -> RuleWeights:
    """The same rule with its correction d set to zero: update = -step · exp(s) · m̂/√v̂."""
    if weights.config.output != "residual":
        raise ValueError(f"{weights.name} has a {weights.config.output!r} readout: only a 'residual' rule has a "
                         "correction to remove")
    theta = {name: value.clone() for name, value in weights.theta.items()}
    theta["readout.w"][0].zero_()
    theta["readout.b"][0].zero_()
    return dataclasses.replace(weights, theta=theta, name=f"{weights.name} (correction off)",
                               sha256=f"{weights.sha256}-correction-off")


def run(task: str, weights: RuleWeights, seed: int, steps: int, lr: float, data_root) -> dict:
    """One run: the final evaluation, the mean cosine of consecutive gradients over the last WINDOW steps and the last
    gradient's norm (or ``diverged``)."""
    problem = make_task("suite", data_root=data_root, task=task).sample(seed)
    params = [p for p in problem.model.parameters() if p.requires_grad]
    optimizer = LearnedOptimizer(params, weights=weights, lr=lr)
    previous, cosines, grad_norm = None, [], float("nan")
    for t in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = problem.loss(t)
        if not torch.isfinite(loss):
            return {"diverged": True}
        loss.backward()
        if t >= steps - WINDOW - 1:
            grad = torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None])
            grad_norm = float(grad.norm())
            if previous is not None:
                cosines.append(float(grad @ previous) / max(grad_norm * float(previous.norm()), 1e-30))
            previous = grad.clone()
        optimizer.step()
    return {"diverged": False, **problem.evaluate(), "lag1_cosine": sum(cosines) / max(len(cosines), 1),
            "grad_norm": grad_norm}


def summarize(runs: list[dict]) -> dict:
    """Mean ± s.e. of each measure over seeds (a diverged seed makes the variant diverged)."""
    if any(r["diverged"] for r in runs):
        return {"diverged": True}
    keys = [k for k in runs[0] if k != "diverged"]
    return {"diverged": False, **{k: mean_se([r[k] for r in runs]) for k in keys}}


def _test_metric(s: dict) -> str:
    if "test_accuracy" in s:
        return fmt(*s["test_accuracy"])
    return fmt(*s["test_loss"]) + " (loss)" if "test_loss" in s else "—"


def report(data: dict) -> str:
    s = data["settings"]
    lines = ["# The learned correction of a residual rule, on and off", "",
             f"`{data['provenance']['command']}` — commit `{data['provenance']['git_commit']}`, "
             f"{data['provenance']['device']}, {data['provenance']['wall_time_s']:.0f} s.", "",
             f"Rule `{data['rule']}`; 'correction off': the same weights with the correction d set to zero "
             "(update = −step · exp(s) · m̂/√v̂). "
             f"{len(s['seeds'])} seeds (mean ± s.e.); final training loss on the task's fixed training subset; "
             f"lag-1 cosine: the mean cosine between consecutive full gradients over the last {WINDOW} steps "
             "(−1: a period-2 oscillation; near 0: noise; near +1: steady descent).", ""]

    def row(name, steps, pair):
        on, off = (pair[v] for v in VARIANTS)
        if on["diverged"] or off["diverged"]:
            return [name, steps, "diverged" if on["diverged"] else fmt(*on["train_loss"]),
                    "diverged" if off["diverged"] else fmt(*off["train_loss"]), "—", "—", "—"]
        ratio = off["train_loss"][0] / on["train_loss"][0]
        return [name, steps, fmt(*on["train_loss"]), fmt(*off["train_loss"]), f"{ratio:.3g}",
                f"{on['lag1_cosine'][0]:+.2f} / {off['lag1_cosine'][0]:+.2f}",
                f"{_test_metric(on)} / {_test_metric(off)}"]

    header = ["task", "steps", "final train loss, shipped", "correction off", "off ÷ shipped",
              "lag-1 cosine, shipped / off", "test accuracy (or loss), shipped / off"]
    lines += ["## Tasks", "", markdown_table(header, [row(t, s["steps"], pair) for t, pair in data["tasks"].items()]),
              ""]
    floor = data["floor"]
    rows = []
    for lr, pair in floor.items():
        rows.append(row(f"{FLOOR_TASK}, lr × {float(lr):.3g}", s["floor_steps"], pair))
    lines += ["## A full-batch run against the step", "",
              f"{FLOOR_TASK} for {s['floor_steps']} steps with the rule's `lr` scaled: a lag-1 cosine near −1 at "
              "every `lr` is an oscillation that a smaller step does not end.", "", markdown_table(header, rows), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.residual_correction",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="default", help="a rule with a 'residual' readout")
    parser.add_argument("--tasks", default=",".join(PARTS["dev"]), help="comma-separated suite tasks")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--floor-steps", type=int, default=10000)
    parser.add_argument("--eval-seeds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="one cheap task, 30 and 60 steps, one seed: a smoke test")
    parser.add_argument("--report", default="residual_correction")
    parser.add_argument("--data-root", default=None)
    add_out_argument(parser)
    args = parser.parse_args(argv)
    resolve_out(args)
    tasks = args.tasks.split(",")
    unknown = [t for t in tasks if t not in SUITE]
    if unknown:
        parser.exit(2, f"{parser.prog}: error: unknown task(s) {unknown} (the suite: {', '.join(SUITE)})\n")
    try:
        shipped = load_weights(args.weights)
        variants = dict(zip(VARIANTS, (shipped, without_correction(shipped))))
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"{parser.prog}: error: --weights: {exc}\n")
    if args.quick:
        tasks, args.steps, args.floor_steps, args.eval_seeds = [FLOOR_TASK], 30, 60, 1
    seeds = list(EVAL_SEEDS[: args.eval_seeds])
    started = time.perf_counter()
    jobs = [("tasks", t, 1.0, args.steps) for t in tasks] + [("floor", FLOOR_TASK, lr, args.floor_steps)
                                                             for lr in FLOOR_LRS]
    data = {"settings": {"tasks": tasks, "steps": args.steps, "floor_steps": args.floor_steps, "seeds": seeds},
            "rule": shipped.name, "rule_sha256": shipped.sha256, "tasks": {}, "floor": {}}
    for part, task, lr, steps in progress(jobs, desc="residual_correction"):
        key = task if part == "tasks" else f"{lr:.6g}"
        data[part][key] = {name: summarize([run(task, w, seed, steps, lr, args.data_root) for seed in seeds])
                           for name, w in variants.items()}
    data["provenance"] = provenance("benchmarks.residual_correction", argv, "cpu", started)
    out = Path(args.out)
    write_json(out / f"{args.report}.json", data)
    text = report(data)
    (out / f"{args.report}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
