"""A short demo: the shipped learned optimizer beside Adam, on the paper's two kinds of task.

    python -m learned_optim.demo                 # about a minute on 2 CPU cores

For each task every optimizer trains the same problems (the same initial weights and batches):
LearnedOptimizer with the default weights (and with the shipped rule meta-trained on that very
task, where there is one), Adam at its default learning rate 1e-3, and Adam with its learning
rate picked from {1, 0.3, ..., 1e-5} on separate tuning problems. The tasks: 10-dimensional
quadratics, and the paper's MLP (one hidden layer of 20 sigmoid units, batch 128) on the first
image dataset found: MNIST (in --data-root, $LEARNED_OPTIM_DATA or ~/.cache/learned_optim/data),
Fashion-MNIST (there, or from Debian's dataset-fashion-mnist package), or scikit-learn's digits.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

from . import LearnedOptimizer, load_weights, pretrained_card
from .baselines import baseline, compare, tune_lr
from .pretrained import aliases, shipped_names
from .tasks import EVAL_SEEDS, TUNING_SEEDS, DataNotFoundError, make_task
from .tasks.data import DATASETS, available_datasets

TASKS = ("quadratic", "mlp")


def _mean_se(values: list[float]) -> str:
    n = len(values)
    mean = sum(values) / n
    if not math.isfinite(mean):
        return "diverged"
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else float("nan")
    return f"{mean:8.4f} ± {se:.4f}"


def specialists(task, weights) -> dict:
    """The shipped rules meta-trained on exactly this task (other than ``weights``), by name."""
    described = json.loads(json.dumps(task.describe()))  # tuples as lists, as the cards hold them
    found = {}
    for name in shipped_names():
        card = pretrained_card(name)
        if card.get("task") == described and card["sha256"] != weights.sha256 and not card.get("intermediate_of"):
            found[name] = load_weights(name)
    return found


def run(task, title: str, weights, args) -> None:
    started = time.perf_counter()
    best_lr, _ = tune_lr(task, "Adam", TUNING_SEEDS[: args.tune_seeds], args.steps)
    optimizers = {f"LearnedOptimizer ({weights.name})": lambda p: LearnedOptimizer(p, weights=weights)}
    for name, rule in specialists(task, weights).items():
        optimizers[f"LearnedOptimizer ({name})"] = lambda p, w=rule: LearnedOptimizer(p, weights=w)
    optimizers |= {
        "Adam (lr=1e-3, its default)": baseline("Adam", 1e-3),
        f"Adam (lr={best_lr:g}, tuned)": baseline("Adam", best_lr),
    }
    results = compare(task, optimizers, EVAL_SEEDS[: args.seeds], args.steps)
    print(f"\n{title}: {args.steps} steps, mean ± s.e. over {args.seeds} problems "
          f"({time.perf_counter() - started:.0f} s)")
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
    parser.add_argument("--tasks", default=",".join(TASKS), help="quadratic, mlp, or both")
    parser.add_argument("--dataset", default="auto", choices=("auto", *DATASETS),
                        help="the MLP's data: auto (the first of MNIST, Fashion-MNIST, digits found here)")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.seeds < 2 or args.tune_seeds < 1:
        parser.error("--steps and --tune-seeds must be >= 1 and --seeds >= 2")
    tasks = args.tasks.split(",")
    unknown = [name for name in tasks if name not in TASKS]
    if unknown:  # before any work, as a usage error (not a traceback from the first run)
        parser.error(f"unknown task(s) {unknown} (available: {', '.join(TASKS)})")
    try:
        weights = load_weights(args.weights)
    except (FileNotFoundError, ValueError) as exc:
        parser.error(f"--weights {args.weights!r}: {exc}")
    shown = weights.name + (f" ({aliases()[weights.name]})" if weights.name in aliases() else "")
    print(f"weights: {shown}, sha256 {weights.sha256[:12]}\n  {weights.card.get('description', '')}")
    for name in tasks:
        if name == "quadratic":
            run(make_task("quadratic"), "10-d quadratics", weights, args)
            continue
        dataset = args.dataset
        if dataset == "auto":
            found = available_datasets(args.data_root)
            if not found:
                print("\nmlp: skipped (no MNIST or Fashion-MNIST files found, and scikit-learn is not installed)")
                continue
            dataset = found[0]
        try:
            task = make_task("mnist_mlp", data_root=args.data_root, dataset=dataset)
        except DataNotFoundError as exc:
            print(f"\nmlp: skipped. {exc}")
            continue
        run(task, f"MLP 1x20 sigmoid on {dataset}", weights, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
