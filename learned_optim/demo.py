"""A short demo: the shipped learned optimizer beside Adam, on the paper's two tasks.

    python -m learned_optim.demo                 # ~1 minute on 2 CPU cores

For each task, every optimizer trains the same problems (same initial weights,
same batches): LearnedOptimizer with the default weights (and with the shipped
rule meta-trained on that task, where that is another one), Adam at its default
learning rate 1e-3, and Adam with its learning rate picked from
{1, 0.3, ..., 1e-5} on separate tuning problems. MNIST runs when the data is
found (--data-root, $LEARNED_OPTIM_DATA, or ~/.cache/learned_optim/data).
"""

from __future__ import annotations

import argparse
import math
import sys
import time

from . import LearnedOptimizer, list_pretrained, load_weights
from .baselines import baseline, compare, tune_lr
from .tasks import EVAL_SEEDS, TASKS, TUNING_SEEDS, DataNotFoundError, make_task


def _mean_se(values: list[float]) -> str:
    n = len(values)
    mean = sum(values) / n
    if not math.isfinite(mean):
        return "diverged"
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else float("nan")
    return f"{mean:8.4f} ± {se:.4f}"


def run(task_name: str, weights, args) -> None:
    task = make_task(task_name, data_root=args.data_root)
    started = time.perf_counter()
    best_lr, _ = tune_lr(task, "Adam", TUNING_SEEDS[: args.tune_seeds], args.steps)
    optimizers = {f"LearnedOptimizer ({weights.name})": lambda p: LearnedOptimizer(p, weights=weights)}
    # beside the chosen weights, the shipped rule meta-trained on this very task, if it is another one
    for name, card in list_pretrained().items():
        if "alias_of" not in card and card.get("task", {}).get("name") == task_name and card["sha256"] != weights.sha256:
            specialist = load_weights(name)
            optimizers[f"LearnedOptimizer ({name})"] = lambda p, w=specialist: LearnedOptimizer(p, weights=w)
    optimizers |= {
        "Adam (lr=1e-3, its default)": baseline("Adam", 1e-3),
        f"Adam (lr={best_lr:g}, tuned)": baseline("Adam", best_lr),
    }
    results = compare(task, optimizers, EVAL_SEEDS[: args.seeds], args.steps)
    print(f"\n{task_name}: {args.steps} steps, mean ± s.e. over {args.seeds} problems ({time.perf_counter() - started:.0f} s)")
    header = f"  {'optimizer':<36} {'final loss':>20} {'sum of losses':>22}"
    has_accuracy = bool(results[next(iter(results))]["metrics"][0])
    print(header + (f" {'test accuracy':>18}" if has_accuracy else ""))
    for name, result in results.items():
        losses = result["losses"]
        line = f"  {name:<36} {_mean_se(losses[:, -1].tolist()):>20} {_mean_se(losses.sum(1).tolist()):>22}"
        if has_accuracy:
            line += f" {_mean_se([m['test_accuracy'] for m in result['metrics']]):>18}"
        print(line)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m learned_optim.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="default", help="a shipped rule name or a weight file")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=10, help="evaluation problems per task")
    parser.add_argument("--tune-seeds", type=int, default=5, help="problems used to tune Adam's learning rate")
    parser.add_argument("--tasks", default="quadratic,mnist_mlp")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.seeds < 2 or args.tune_seeds < 1:
        parser.error("--steps and --tune-seeds must be >= 1 and --seeds >= 2")
    unknown = [name for name in args.tasks.split(",") if name not in TASKS]
    if unknown:  # before any work, as a usage error (not a traceback from the first run)
        parser.error(f"unknown task(s) {unknown} (available: {', '.join(TASKS)})")
    try:
        weights = load_weights(args.weights)
    except (FileNotFoundError, ValueError) as exc:
        parser.error(f"--weights {args.weights!r}: {exc}")
    print(f"weights: {weights.name} ({weights.card.get('description', '')}; sha256 {weights.sha256[:12]})")
    for task_name in args.tasks.split(","):
        try:
            run(task_name, weights, args)
        except DataNotFoundError as exc:
            print(f"\n{task_name}: skipped. {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
