"""The paper's two base tasks: each shipped rule against tuned Adam, RMSprop, SGD and NAG.

    python -m benchmarks.base_tasks            # 100 evaluation seeds, 20 tuning seeds
    python -m benchmarks.base_tasks --quick    # a smoke run in well under a minute

Tasks: 10-d random quadratics and the MNIST MLP (1 hidden layer of 20 sigmoid
units, batch 128), 100 steps. Each baseline's learning rate is picked from
{1, 0.3, 0.1, ..., 1e-5} by the mean sum of losses on tuning seeds, disjoint from
the evaluation seeds. Reported per optimizer: the sum of losses over the run
(the reproductions' metric, losses f(θ_0) ... f(θ_99)), the final loss, and on
MNIST the test accuracy after the run; mean ± standard error over the seeds.
Adam at its default learning rate (1e-3) is shown too: the swap a user makes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from learned_optim import LearnedOptimizer, load_weights, pretrained_card
from learned_optim.pretrained import shipped_names
from learned_optim.baselines import BASELINES, LR_GRID, baseline, compare, tune_lr
from learned_optim.tasks import EVAL_SEEDS, TUNING_SEEDS, DataNotFoundError, make_task

from .common import add_out_argument, resolve_out, fmt, markdown_table, mean_se, plot_curves, progress, provenance, write_json

# sum of losses over 100 steps reported by the public PyTorch reproduction (see the README)
REFERENCE = {
    "quadratic": "2021 re-run of the public reproduction: LSTM 55.8, Adam 123.2, NAG 92.0; "
    "the same notebook on this machine (100 epochs): LSTM 64.7, NAG 90.5, Adam 120.4",
    "mnist_mlp": "2021 re-run of the public reproduction: LSTM 45.1, Adam 86.1",
}
TITLES = {"quadratic": "10-d quadratics", "mnist_mlp": "MNIST MLP (1×20 sigmoid, batch 128)"}


# rules meta-trained on the reverse-engineering tasks (re-*) are analysed there, not benchmarked here
ANALYSIS_TASKS = ("linreg", "rosenbrock", "two_moons", "mnist_cnn")


def shipped_rules() -> list[str]:
    """The shipped rules for these tasks: not the intermediate ones, nor those made for the analysis tasks."""
    cards = {name: pretrained_card(name) for name in shipped_names()}
    return [name for name, card in cards.items()
            if not card.get("intermediate_of") and card.get("metatrain", {}).get("task") not in ANALYSIS_TASKS]


def run_task(task_name: str, rules: list[str], args) -> dict:
    task = make_task(task_name, data_root=args.data_root)
    tune_seeds = list(TUNING_SEEDS[: args.tune_seeds])
    eval_seeds = list(EVAL_SEEDS[: args.eval_seeds])
    tuning = {}
    for name in progress(BASELINES, len(BASELINES), f"{task_name}: tuning"):
        best, scores = tune_lr(task, name, tune_seeds, args.steps, LR_GRID, args.device)
        tuning[name] = {"best_lr": best, "mean_sum_of_losses": {str(lr): s for lr, s in scores.items()}}
    loaded = {rule: load_weights(rule) for rule in rules}  # read and checked once, not per seed
    optimizers = {
        f"LearnedOptimizer ({rule})": (lambda weights: lambda p: LearnedOptimizer(p, weights=weights))(loaded[rule])
        for rule in rules
    }
    optimizers.update({f"{name} (lr={tuning[name]['best_lr']:g}, tuned)": baseline(name, tuning[name]["best_lr"]) for name in BASELINES})
    optimizers["Adam (lr=1e-3, default)"] = baseline("Adam", 1e-3)
    runs = compare(task, optimizers, eval_seeds, args.steps, args.device, wrap=lambda it, n, d: progress(it, n, f"{task_name}: {d}"))
    results = {}
    for name, run in runs.items():
        losses = run["losses"]
        sums, finals = losses.sum(1), losses[:, -1]
        entry = {
            "sum_of_losses": dict(zip(("mean", "se"), mean_se(sums))),
            "final_loss": dict(zip(("mean", "se"), mean_se(finals))),
            "per_seed_sum_of_losses": sums.tolist(),
            "per_seed_final_loss": finals.tolist(),
            "curve_mean": losses.double().mean(0).tolist(),
        }
        if run["metrics"] and run["metrics"][0]:
            for key in run["metrics"][0]:
                entry[key] = dict(zip(("mean", "se"), mean_se(m[key] for m in run["metrics"])))
        results[name] = entry
    plot_curves(
        {name: run["losses"] for name, run in runs.items()},
        Path(args.out) / f"base_tasks_{task_name}.png",
        f"{TITLES[task_name]}: mean ± s.e. over {len(eval_seeds)} seeds",
    )
    return {"task": task.describe(), "tuning": tuning, "results": results, "reference": REFERENCE[task_name]}


def to_markdown(data: dict) -> str:
    s = data["settings"]
    parts = [
        "# Base tasks: shipped rules against tuned baselines",
        "",
        f"`{data['provenance']['command']}` — commit `{data['provenance']['git_commit']}`, "
        f"{data['provenance']['device']}, {data['provenance']['wall_time_s']} s.",
        "",
        f"{s['steps']} steps; mean ± standard error over {s['eval_seeds']} evaluation seeds; baselines' learning rates "
        f"picked from {{1, 0.3, …, 1e-5}} on {s['tune_seeds']} separate tuning seeds by the mean sum of losses.",
    ]
    for task_name, block in data["tasks"].items():
        rows = []
        ranked = sorted(block["results"].items(), key=lambda kv: kv[1]["sum_of_losses"]["mean"])
        for name, r in ranked:
            row = [name, fmt(**r["sum_of_losses"]), fmt(**r["final_loss"])]
            if "test_accuracy" in r:
                row.append(fmt(r["test_accuracy"]["mean"], r["test_accuracy"]["se"]))
            rows.append(row)
        header = ["optimizer", "sum of losses", "final loss"] + (["test accuracy"] if "test_accuracy" in ranked[0][1] else [])
        parts += ["", f"## {TITLES[task_name]}", "", markdown_table(header, rows), "", f"Reference: {block['reference']}.",
                  "", f"![{task_name}](base_tasks_{task_name}.png)"]
    return "\n".join(parts) + "\n"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.base_tasks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small version for smoke tests")
    parser.add_argument("--device", default="cpu")
    add_out_argument(parser)
    parser.add_argument("--tasks", default="quadratic,mnist_mlp")
    parser.add_argument("--weights", default=None, help="comma-separated rules (default: every shipped rule)")
    parser.add_argument("--eval-seeds", type=int, default=100)
    parser.add_argument("--tune-seeds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)
    resolve_out(args)
    if args.quick:
        args.eval_seeds, args.tune_seeds, args.steps = min(args.eval_seeds, 3), min(args.tune_seeds, 2), min(args.steps, 15)
    started = time.perf_counter()
    rules = args.weights.split(",") if args.weights else shipped_rules()
    data = {"settings": {k: v for k, v in vars(args).items() if k not in ("out",)}, "tasks": {}}
    for task_name in args.tasks.split(","):
        try:
            data["tasks"][task_name] = run_task(task_name, rules, args)
        except DataNotFoundError as exc:
            parser.exit(2, f"{parser.prog}: error: {exc}\n")
    data["provenance"] = provenance("benchmarks.base_tasks", argv, args.device, started)
    out = Path(args.out)
    write_json(out / "base_tasks.json", data)
    (out / "base_tasks.md").write_text(to_markdown(data))
    print(to_markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
