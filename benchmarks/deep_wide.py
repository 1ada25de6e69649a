"""The report's scaling grid: learned rules against tuned Adam, RMSprop, SGD and NAG on deeper and wider MNIST MLPs.

    python -m benchmarks.deep_wide --data-root ../shared/data           # the whole grid (hours on 2 CPU cores)
    python -m benchmarks.deep_wide --quick --data-root ../shared/data   # two small cells, well under a minute
    python -m benchmarks.deep_wide --cells 1x20,2x100 --device cuda

Cells (hidden layers × units, sigmoid; plus ReLU at 1×20), batch 128. Every
optimizer runs the longest horizon once per seed, and the shorter horizons are
read off the same runs (a run's first k steps do not depend on how long it goes
on); the same holds for tuning, where each baseline's learning rate is picked from
{1, 0.3, …, 1e-5} per cell and per horizon by the mean sum of losses on tuning
seeds disjoint from the evaluation seeds. Reported per cell and horizon: final
training loss, sum of losses, test accuracy; mean ± standard error over the
evaluation seeds; and a summary of the cells in which each learned rule beats
tuned Adam on final loss, with the ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import BASELINES, LR_GRID, baseline, train_and_evaluate
from learned_optim.tasks import EVAL_SEEDS, TUNING_SEEDS, DataNotFoundError, make_task

from .common import (add_out_argument, resolve_out, compute_note, draw_curves, fmt, grid_summary, kept_run, markdown_table, mean_se, progress,
                     provenance, pyplot, write_json)

# (hidden layers, units per layer, activation): the report's grid
CELLS: tuple[tuple[int, int, str], ...] = (
    (1, 20, "sigmoid"), (1, 40, "sigmoid"), (2, 20, "sigmoid"), (1, 60, "sigmoid"), (2, 100, "sigmoid"),
    (3, 20, "sigmoid"), (4, 20, "sigmoid"), (5, 20, "sigmoid"), (1, 1000, "sigmoid"), (2, 1000, "sigmoid"),
    (3, 120, "sigmoid"), (5, 300, "sigmoid"), (1, 20, "relu"),
)
# the report's rule: meta-trained on the 1x20 sigmoid net, no gradient normalization. The package's default and the
# rules before it run against these same baselines and seeds in benchmarks.levers.
DEFAULT_WEIGHTS = "l2l-mnist"  # comma-separated; an alias and its target are run once


def cell_name(cell: tuple[int, int, str]) -> str:
    layers, units, activation = cell
    return f"{layers}x{units}" + ("" if activation == "sigmoid" else f"-{activation}")


def parse_cells(text: str) -> list[tuple[int, int, str]]:
    known = {cell_name(c): c for c in CELLS}
    cells = []
    for name in text.split(","):
        if name in known:
            cells.append(known[name])
            continue
        try:
            shape, _, activation = name.partition("-")
            layers, units = (int(v) for v in shape.split("x"))
            cells.append((layers, units, activation or "sigmoid"))
        except ValueError:
            raise ValueError(f"Invalid cell: {name!r} (e.g. 2x100 or 1x20-relu)") from None
    return cells


def general_rules(spec: str) -> dict[str, object]:
    """name -> loaded weights, one entry per distinct file (an alias and its target are the same rule)."""
    rules, seen = {}, {}
    for name in spec.split(","):
        weights = load_weights(name)
        if weights.sha256 in seen:
            continue
        seen[weights.sha256] = name
        rules[name] = weights
    return rules


def run_cell(cell, rules, args, horizons, tuning_file: Path | None = None, settings: dict | None = None) -> dict:
    """One cell: tune the baselines, then run every optimizer on the evaluation seeds.

    With ``tuning_file``, the tuning (the longest part of a large cell) is kept there under
    ``settings`` and reused by a later call with the same settings, e.g. after a crash.
    """
    layers, units, activation = cell
    task = make_task("mnist_mlp", data_root=args.data_root, hidden=(units,) * layers, activation=activation)
    longest = max(horizons)
    tune_seeds, eval_seeds = list(TUNING_SEEDS[: args.tune_seeds]), list(EVAL_SEEDS[: args.eval_seeds])
    label = cell_name(cell)

    # tuning: one run of the longest horizon per (baseline, rate, seed) scores every horizon
    tuned: dict[str, dict[int, float]] = {}
    tuning_scores: dict[str, dict[str, dict[str, float]]] = {}
    grid = LR_GRID if not args.quick else LR_GRID[::3]
    stored = json.loads(tuning_file.read_text()) if tuning_file is not None and tuning_file.exists() else None
    reused = stored is not None and stored["settings"] == settings
    if reused:
        tuned = {name: {int(h): lr for h, lr in by_h.items()} for name, by_h in stored["tuned_lr"].items()}
        tuning_scores = stored["tuning_mean_sum_of_losses"]
    baselines = chosen_baselines(args)
    for name in progress([] if reused else baselines, 0 if reused else len(baselines), f"{label}: tuning"):
        sums = {h: {lr: 0.0 for lr in grid} for h in horizons}
        for lr in grid:
            for seed in tune_seeds:
                losses, _ = train_and_evaluate(task.sample(seed, args.device), baseline(name, lr), longest)
                for h in horizons:
                    total = float(losses[:h].sum())
                    sums[h][lr] += (total if math.isfinite(total) else float("inf")) / len(tune_seeds)
        tuned[name] = {h: min(grid, key=lambda lr: (sums[h][lr], -lr)) for h in horizons}
        tuning_scores[name] = {str(h): {str(lr): sums[h][lr] for lr in grid} for h in horizons}
    if tuning_file is not None and not reused:
        write_json(tuning_file, {"settings": settings, "tuning_mean_sum_of_losses": tuning_scores,
                                 "tuned_lr": {name: {str(h): lr for h, lr in by_h.items()} for name, by_h in tuned.items()}})

    # the runs: each distinct optimizer once, at the longest horizon
    runs: dict[str, tuple] = {}
    factories = {f"LearnedOptimizer ({rule})": (lambda w: lambda p: LearnedOptimizer(p, weights=w))(weights) for rule, weights in rules.items()}
    factories["Adam (lr=1e-3, default)"] = baseline("Adam", 1e-3)
    for name in baselines:
        for lr in sorted(set(tuned[name].values())):
            factories[f"{name} (lr={lr:g})"] = baseline(name, lr)
    for key, factory in factories.items():
        curves, evaluations = [], []
        for seed in progress(eval_seeds, len(eval_seeds), f"{label}: {key}"):
            losses, evals = train_and_evaluate(task.sample(seed, args.device), factory, longest, horizons)
            curves.append(losses)
            evaluations.append(evals)
        runs[key] = (torch.stack(curves), evaluations)

    results: dict[str, dict] = {}
    for h in horizons:
        chosen = {key: key for key in factories if not key.split(" (")[0] in BASELINES or "default" in key}
        chosen.update({f"{name} (lr={tuned[name][h]:g}, tuned)": f"{name} (lr={tuned[name][h]:g})" for name in baselines})
        block = {}
        for shown, key in chosen.items():
            losses, evaluations = runs[key]
            losses = losses[:, :h]
            finals, sums = losses[:, -1], losses.sum(1)
            accuracy = [e[h]["test_accuracy"] if e[h] is not None else float("nan") for e in evaluations]
            block[shown] = {
                "final_loss": dict(zip(("mean", "se"), mean_se(finals))),
                "sum_of_losses": dict(zip(("mean", "se"), mean_se(sums))),
                "test_accuracy": dict(zip(("mean", "se"), mean_se(a for a in accuracy if math.isfinite(a)))) if any(math.isfinite(a) for a in accuracy) else None,
                "diverged_runs": int((~torch.isfinite(finals)).sum()),
                "curve_mean": losses.double().mean(0).tolist(),
                "curve_se": (losses.double().std(0) / math.sqrt(losses.shape[0])).tolist() if losses.shape[0] > 1 else None,
            }
        results[str(h)] = block
    return {
        "cell": {"layers": layers, "units": units, "activation": activation,
                 "parameters": sum(p.numel() for p in task.sample(0).model.parameters())},
        "tuned_lr": {name: {str(h): lr for h, lr in by_h.items()} for name, by_h in tuned.items()},
        "tuning_mean_sum_of_losses": tuning_scores,
        "results": results,
    }


def chosen_baselines(args) -> list[str]:
    """The baselines a run tunes and runs: ``--baselines`` (default every one of baselines.BASELINES)."""
    return list(getattr(args, "baselines", None) or BASELINES)


def cached_cell(cell, rules, args, horizons, reuse: bool) -> dict:
    """run_cell's result, kept in OUT/deep_wide_cells/ (see kept_cell)."""
    return kept_cell(cell, rules, args, horizons, reuse)["result"]


def cell_settings(rules, args, horizons) -> dict:
    """What changes a cell's numbers: rules (by file hash), horizons, seeds, device, data."""
    return {
        "quick": args.quick, "horizons": list(horizons), "weights": args.weights, "eval_seeds": args.eval_seeds,
        "tune_seeds": args.tune_seeds, "device": args.device, "data_root": args.data_root,
        "rules": rule_hashes(rules),
        # a run of every baseline was written before the option existed: its settings do not name them
        **({"baselines": chosen_baselines(args)} if chosen_baselines(args) != list(BASELINES) else {}),
    }


def rule_hashes(rules) -> dict[str, str]:
    return {name: w.sha256 for name, w in rules.items()}


def cell_cache(cell, args) -> Path:
    return Path(args.out) / "deep_wide_cells" / f"{cell_name(cell)}.json"


def kept_cell(cell, rules, args, horizons, reuse: bool) -> dict:
    """run_cell, kept in OUT/deep_wide_cells/ with its commit and compute time (common.kept_run); with reuse, a
    stored cell of the same settings is returned.

    The settings are what changes the numbers: rules (by file hash), horizons, seeds, device,
    data. benchmarks.paper's variants go through here too, so equal settings share the runs.
    """
    same = cell_settings(rules, args, horizons)
    saved = cell_cache(cell, args)
    # the baselines' tuning does not depend on the rules: kept apart, so a crash later in the cell keeps it
    tuning_settings = {k: v for k, v in same.items() if k not in ("rules", "weights", "eval_seeds")}
    return kept_run(saved, same, lambda: run_cell(cell, rules, args, horizons, saved.with_suffix(".tuning.json"),
                                                  tuning_settings), reuse)


def tuned_adam_key(results: dict) -> str:
    """The name under which a cell's horizon block holds tuned Adam (e.g. "Adam (lr=0.003, tuned)")."""
    return next(k for k in results if k.startswith("Adam (") and k.endswith("tuned)"))


def summarize(data: dict, rules: list[str]) -> dict:
    """Per learned rule and horizon: cells where its mean final loss is at most tuned Adam's, and the ratios."""
    summary = {}
    for rule in rules:
        key = f"LearnedOptimizer ({rule})"
        for h in data["settings"]["horizons"]:
            finals = {}
            for cell, block in data["cells"].items():
                results = block["results"][str(h)]
                finals[cell] = tuple(results[name]["final_loss"]["mean"]
                                     for name in (key, tuned_adam_key(results), "Adam (lr=1e-3, default)"))
            summary[f"{rule}@{h}"] = grid_summary(finals)
    return summary


def to_markdown(data: dict) -> str:
    s, p = data["settings"], data["provenance"]
    parts = [
        "# deep_wide: learned rules against tuned baselines on deeper and wider MNIST MLPs",
        "",
        f"`{p['command']}` — commit `{p['git_commit']}`, {p['device']}, {p['wall_time_s']} s.{p.get('kept_runs', '')}",
        "",
        f"Batch 128; mean ± s.e. over {s['eval_seeds']} evaluation seeds; baselines' rates tuned per cell and horizon on "
        f"{s['tune_seeds']} tuning seeds by the mean sum of losses. Final loss = training loss at the last step.",
        "",
        "## Summary: final loss against tuned Adam",
        "",
        markdown_table(
            ["rule @ steps", "cells where it beats tuned Adam", "cells where it beats Adam at 1e-3", "worst ratio to tuned Adam"],
            [[k, f"{v['beats_tuned_adam']} of {v['cells']}", f"{v['beats_default_adam']} of {v['cells']}",
              f"{max(v['final_loss_ratio_to_tuned_adam'].values()):.3g}"] for k, v in data["summary"].items()],
        ),
    ]
    for rule in data["summary"] and sorted({k.split("@")[0] for k in data["summary"]}):
        rows = []
        for h in s["horizons"]:
            for cell, block in data["cells"].items():
                results = block["results"][str(h)]
                mine = results[f"LearnedOptimizer ({rule})"]["final_loss"]
                adam_key = tuned_adam_key(results)
                tuned = {k: v for k, v in results.items() if k.endswith("tuned)")}
                best_key = min(tuned, key=lambda k: tuned[k]["final_loss"]["mean"])
                ratio = mine["mean"] / results[adam_key]["final_loss"]["mean"]
                rows.append([cell, block["cell"]["parameters"], h, fmt(**mine), fmt(**results[adam_key]["final_loss"]),
                             adam_key.split("lr=")[1].split(",")[0], f"{ratio:.2f}" + (" (loses)" if ratio > 1 else ""),
                             f"{best_key.split(' (')[0]} {tuned[best_key]['final_loss']['mean']:.3g}",
                             fmt(**results["Adam (lr=1e-3, default)"]["final_loss"])])
        parts += ["", f"## Per cell: LearnedOptimizer ({rule}) against tuned Adam (final training loss)", "",
                  markdown_table(["cell", "parameters", "steps", "learned", "Adam, tuned", "its lr", "learned / tuned Adam",
                                  "best tuned baseline", "Adam at 1e-3"], rows)]
    for h in s["horizons"]:
        rows = []
        for cell, block in data["cells"].items():
            ranked = sorted(block["results"][str(h)].items(), key=lambda kv: kv[1]["final_loss"]["mean"])
            for rank, (name, r) in enumerate(ranked):
                acc = r["test_accuracy"]
                rows.append([cell if rank == 0 else "", name, fmt(**r["final_loss"]), fmt(**r["sum_of_losses"]),
                             fmt(acc["mean"], acc["se"]) if acc else "diverged"])
        parts += ["", f"## {h} steps", "", markdown_table(["cell", "optimizer", "final loss", "sum of losses", "test accuracy"], rows),
                  "", f"![curves](deep_wide_{h}.png)"]
    return "\n".join(parts) + "\n"


def plot(data: dict, out: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    for h in data["settings"]["horizons"]:
        cells = list(data["cells"])
        cols = min(4, len(cells))
        rows = math.ceil(len(cells) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
        for ax, cell in zip(axes.flat, cells):
            results = data["cells"][cell]["results"][str(h)]
            draw_curves(ax, {k: (v["curve_mean"], v["curve_se"]) for k, v in results.items()}, cell, legend=cell == cells[0])
        for ax in list(axes.flat)[len(cells):]:
            ax.axis("off")
        fig.tight_layout()
        out.mkdir(parents=True, exist_ok=True)
        fig.savefig(out / f"deep_wide_{h}.png", dpi=90)
        plt.close(fig)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.deep_wide", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two small cells, few seeds and steps: a smoke test")
    parser.add_argument("--cells", default=",".join(cell_name(c) for c in CELLS))
    parser.add_argument("--horizons", default="100,200", help="step counts reported; runs go to the longest")
    parser.add_argument("--baselines", default=None, type=lambda text: text.split(","),
                        help=f"the tuned baselines (default: {','.join(BASELINES)}); long horizons may take Adam alone")
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS)
    parser.add_argument("--eval-seeds", type=int, default=20)
    parser.add_argument("--tune-seeds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    add_out_argument(parser)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--resume", action="store_true",
                        help="reuse the cells finished by an earlier run with the same settings (kept in OUT/deep_wide_cells/)")
    args = parser.parse_args(argv)
    resolve_out(args)
    if args.quick:
        args.cells, args.horizons, args.eval_seeds, args.tune_seeds = "1x20,2x20", "5,10", 2, 1
    try:
        cells, horizons = parse_cells(args.cells), sorted(int(h) for h in args.horizons.split(","))
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    started = time.perf_counter()
    rules = general_rules(args.weights)
    data = {"settings": {**{k: v for k, v in vars(args).items() if k not in ("out", "resume", "cells")}, "horizons": horizons,
                         "rules_sha256": rule_hashes(rules)},
            "cells": {}}
    kept = []
    try:
        for cell in cells:
            kept.append(kept_cell(cell, rules, args, horizons, reuse=args.resume))
            data["cells"][cell_name(cell)] = kept[-1]["result"]
    except DataNotFoundError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    data["summary"] = summarize(data, list(rules))
    data["provenance"] = provenance("benchmarks.deep_wide", argv, args.device, started)
    data["provenance"]["kept_runs"] = compute_note(kept)
    out = Path(args.out)
    write_json(out / "deep_wide.json", data)
    plot(data, out)
    (out / "deep_wide.md").write_text(to_markdown(data))
    print(to_markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
