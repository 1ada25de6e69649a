"""Levers: what each change to the learned optimizer buys on the deep_wide grid, against tuned Adam.

    python -m benchmarks.levers --data-root ../shared/data                       # every lever, every cell
    python -m benchmarks.levers --cells 1x20,3x20 --levers tensor-1.5e-3 --data-root DATA
    python -m benchmarks.levers --quick --data-root DATA                         # a smoke test

A lever is a rule: a weight file, optionally with changed settings (``config``). Each runs on
deep_wide's evaluation seeds and horizons; tuned Adam and Adam at 1e-3 are read
from deep_wide's cell cache (OUT/deep_wide_cells/; a cell missing there is run
first, as ``python -m benchmarks.deep_wide`` would), so every ratio compares the
same seeds. Per lever and cell the runs are cached in OUT/levers_cells/ (rerun
the same command to continue). Writes levers.json, levers.md and levers_<steps>.png (or, with
``--report NAME``, NAME.json, NAME.md and NAME_<steps>.png).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import train_and_evaluate
from learned_optim.tasks import EVAL_SEEDS, DataNotFoundError, make_task

from . import deep_wide
from .common import (add_out_argument, resolve_out, compute_note, fmt, grid_summary, kept_run, markdown_table, mean_se, progress, provenance,
                     pyplot, seed_kept, write_json)

# name: (what it is, LearnedOptimizer keyword arguments)
LEVERS: dict[str, tuple[str, dict]] = {
    "l2l-mnist": ("l2l-mnist, the report's rule (raw gradients; deep_wide's own runs)", dict(weights="l2l-mnist")),
    "tensor-5e-4": ("l2l-mnist, each tensor's gradient rescaled to RMS 5e-4 (grad_norm='tensor'), no retraining",
                    dict(weights="l2l-mnist", config=dict(grad_norm="tensor", grad_norm_target=5e-4))),
    "tensor-1.5e-3": ("l2l-mnist, each tensor's gradient rescaled to RMS 1.5e-3, no retraining",
                      dict(weights="l2l-mnist", config=dict(grad_norm="tensor", grad_norm_target=1.5e-3))),
    "tensor-5e-3": ("l2l-mnist, each tensor's gradient rescaled to RMS 5e-3, no retraining",
                    dict(weights="l2l-mnist", config=dict(grad_norm="tensor", grad_norm_target=5e-3))),
    "mlp-family": ("l2l-mlp-family: meta-trained from scratch with grad_norm='tensor' (RMS 1.5e-3) on mlp-family, eight "
                   "MNIST MLPs none of which is a grid cell (its card holds the recipe)", dict(weights="l2l-mlp-family")),
    "family-plus-30": ("l2l-mlp-family-plus: l2l-mlp-family given the per-tensor RMS input, then 30 + 30 whole-run CPU "
                       "epochs on mlp-family-plus (its card holds the recipe)", dict(weights="l2l-mlp-family-plus")),
    "distill": ("l2l-mlp-distill, the default: l2l-mlp-family-plus distilled toward a composition with a 1x24-sigmoid "
                "specialist's steps on one-hidden-layer sigmoid nets (python -m learned_optim.distill on mlp-family-plus, "
                "a tensor-count input clipped to T >= 4; its card holds the recipe)", dict(weights="l2l-mlp-distill")),
}
SHIPPED_KEY = "LearnedOptimizer (l2l-mnist)"  # how deep_wide names its runs of the report's rule


def deep_wide_args(args) -> argparse.Namespace:
    """deep_wide's settings for the same seeds and horizons, so its cell cache is shared."""
    return argparse.Namespace(quick=args.quick, weights=deep_wide.DEFAULT_WEIGHTS, eval_seeds=args.eval_seeds,
                              tune_seeds=args.tune_seeds, device=args.device, data_root=args.data_root, out=args.out,
                              baselines=args.baselines)


def lever_rule(lever: str):
    """The lever's rule: its weight file, with its settings changed where the lever says (a research setting a user
    does not pass to LearnedOptimizer: a rule's settings come from its card)."""
    options = LEVERS[lever][1]
    weights = load_weights(options["weights"])
    if options.get("config"):
        weights = dataclasses.replace(weights, config=dataclasses.replace(weights.config, **options["config"]))
    return weights


def run_lever(cell, lever: str, args, horizons) -> dict:
    """The lever's runs on the cell's evaluation seeds: final loss, sum of losses, test accuracy per horizon."""
    layers, units, activation = cell
    task = make_task("mnist_mlp", data_root=args.data_root, hidden=(units,) * layers, activation=activation)
    weights = lever_rule(lever)
    factory = lambda p: LearnedOptimizer(p, weights=weights)  # noqa: E731
    curves, evaluations = [], []
    for seed in progress(EVAL_SEEDS[: args.eval_seeds], args.eval_seeds, f"{deep_wide.cell_name(cell)}: {lever}"):
        losses, evals = train_and_evaluate(task.sample(seed, args.device), factory, max(horizons), horizons)
        curves.append(losses)
        evaluations.append(evals)
    runs = torch.stack(curves)
    out = {}
    for h in horizons:
        finals, sums = runs[:, h - 1], runs[:, :h].sum(1)
        accuracy = [e[h]["test_accuracy"] for e in evaluations if e[h] is not None]
        out[str(h)] = {
            "final_loss": dict(zip(("mean", "se"), mean_se(finals))),
            "sum_of_losses": dict(zip(("mean", "se"), mean_se(sums))),
            "test_accuracy": dict(zip(("mean", "se"), mean_se(accuracy))) if accuracy else None,
            "diverged_runs": int((~torch.isfinite(finals)).sum()),
        }
    return out


def cached_lever(cell, lever: str, args, horizons) -> dict:
    """run_lever, kept in OUT/levers_cells/ with its commit and compute time (common.kept_run): the whole record."""
    options = dict(LEVERS[lever][1])
    same = {"quick": args.quick, "horizons": list(horizons), "eval_seeds": args.eval_seeds, "device": args.device,
            "data_root": args.data_root, "options": {k: v for k, v in options.items() if k != "weights"},
            "weights_sha256": load_weights(options["weights"]).sha256}
    saved = Path(args.out) / "levers_cells" / f"{deep_wide.cell_name(cell)}--{lever}.json"
    return kept_run(saved, same, lambda: run_lever(cell, lever, args, horizons))


def seed_from_deep_wide(cell, rules, dw_args, horizons) -> bool:
    """Fill deep_wide's cache for the cell from the committed deep_wide.json where its settings are ours (a report
    that predates the record of its rules' hashes is taken on its other settings)."""
    same = deep_wide.cell_settings(rules, dw_args, horizons)
    name = deep_wide.cell_name(cell)
    return seed_kept(deep_wide.cell_cache(cell, dw_args), same, Path(dw_args.out) / "deep_wide.json",
                     {k: v for k, v in same.items() if k != "rules"}, lambda data: data["cells"].get(name),
                     if_recorded={"rules_sha256": same["rules"]})


def summarize(data: dict) -> dict:
    return {
        f"{lever}@{h}": grid_summary({
            cell: (block[lever][str(h)]["final_loss"]["mean"], block["tuned Adam"][str(h)]["final_loss"]["mean"],
                   block["Adam 1e-3"][str(h)]["final_loss"]["mean"])
            for cell, block in data["cells"].items()
        })
        for lever in data["levers"] for h in data["settings"]["horizons"]
    }


def to_markdown(data: dict, stem: str = "levers") -> str:
    s, p = data["settings"], data["provenance"]
    parts = [
        "# Levers: the learned optimizer on the deep_wide grid, against tuned Adam",
        "",
        f"`{p['command']}` — commit `{p['git_commit']}`, {p['device']}, {p['wall_time_s']} s.{p.get('kept_runs', '')}",
        "",
        f"MNIST MLPs of deep_wide, batch 128, {s['eval_seeds']} evaluation seeds (deep_wide's), mean final training loss. "
        "Tuned Adam: its learning rate tuned per cell and horizon on deep_wide's tuning seeds (read from deep_wide's runs). "
        "The grid target: at most tuned Adam's final loss in at least 10 of 13 cells, never above 1.5× it, and below "
        "Adam at 1e-3 everywhere.",
        "",
        "## Levers tried",
        "",
        markdown_table(["lever", "what it is"], [[name, LEVERS[name][0]] for name in data["levers"]]),
        "",
        "## Summary",
        "",
        markdown_table(["lever @ steps", "cells at or below tuned Adam", "cells below Adam at 1e-3", "worst ratio to tuned Adam"],
                       [[k, f"{v['beats_tuned_adam']} of {v['cells']}", f"{v['beats_default_adam']} of {v['cells']}",
                         f"{v['worst_ratio']:.3g}"] for k, v in data["summary"].items()]),
    ]
    for h in s["horizons"]:
        rows = []
        for cell, block in data["cells"].items():
            tuned = block["tuned Adam"][str(h)]["final_loss"]
            row = [cell, fmt(**tuned), fmt(**block["Adam 1e-3"][str(h)]["final_loss"])]
            for lever in data["levers"]:
                mine = block[lever][str(h)]["final_loss"]
                ratio = mine["mean"] / tuned["mean"]
                row.append(f"{fmt(**mine)} ({ratio:.2f}{', loses' if ratio > 1 else ''})")
            rows.append(row)
        parts += ["", f"## {h} steps: final loss (ratio to tuned Adam)", "",
                  markdown_table(["cell", "Adam, tuned", "Adam at 1e-3", *data["levers"]], rows),
                  "", f"![ratios]({stem}_{h}.png)"]
    return "\n".join(parts) + "\n"


def plot(data: dict, out: Path, stem: str = "levers") -> None:
    plt = pyplot()
    if plt is None:
        return
    cells = list(data["cells"])
    for h in data["settings"]["horizons"]:
        fig, ax = plt.subplots(figsize=(max(6.4, 0.6 * len(cells) + 2), 4.2))
        for lever in data["levers"]:
            ratios = data["summary"][f"{lever}@{h}"]["final_loss_ratio_to_tuned_adam"]
            ax.plot(range(len(cells)), [ratios[c] for c in cells], marker="o", label=lever)
        ax.axhline(1.0, color="black", lw=0.8, ls="--")
        ax.axhline(1.5, color="grey", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_xticks(range(len(cells)), cells, rotation=45, fontsize=8)
        ax.set_ylabel("final loss / tuned Adam's")
        ax.set_title(f"deep_wide cells, {h} steps ({data['settings']['eval_seeds']} seeds)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        out.mkdir(parents=True, exist_ok=True)
        fig.savefig(out / f"{stem}_{h}.png", dpi=90)
        plt.close(fig)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.levers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two small cells, few seeds and steps: a smoke test")
    parser.add_argument("--cells", default=",".join(deep_wide.cell_name(c) for c in deep_wide.CELLS))
    parser.add_argument("--levers", default=",".join(LEVERS), help=f"of: {', '.join(LEVERS)}")
    parser.add_argument("--eval-seeds", type=int, default=20)
    parser.add_argument("--horizons", default="100,200", help="step counts reported; runs go to the longest")
    parser.add_argument("--baselines", default=None, type=lambda text: text.split(","),
                        help="deep_wide's tuned baselines for its runs (default: all; Adam alone for long horizons)")
    parser.add_argument("--tune-seeds", type=int, default=5, help="deep_wide's (for its cell cache)")
    parser.add_argument("--device", default="cpu")
    add_out_argument(parser)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--report", default="levers",
                        help="name of the files written in OUT: NAME.json, NAME.md, NAME_<steps>.png (the runs' cache is shared)")
    parser.add_argument("--reuse-reports", action="store_true",
                        help="a cell missing from deep_wide's cache is read from the committed OUT/deep_wide.json when "
                             "that report ran the same settings, instead of being run again (hours of tuning on a CPU)")
    args = parser.parse_args(argv)
    resolve_out(args)
    if not args.report.replace("_", "").replace("-", "").isalnum():
        parser.exit(2, f"{parser.prog}: error: invalid --report {args.report!r} (letters, digits, '-' and '_')\n")
    if args.quick:
        args.cells, args.eval_seeds, args.tune_seeds = "1x20,2x20", 2, 1
    horizons = [5, 10] if args.quick else sorted(int(h) for h in args.horizons.split(","))
    try:
        cells = deep_wide.parse_cells(args.cells)
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    levers = args.levers.split(",")
    unknown = [name for name in levers if name not in LEVERS]
    if unknown:
        parser.exit(2, f"{parser.prog}: error: unknown lever(s) {unknown} (known: {', '.join(LEVERS)})\n")
    started = time.perf_counter()
    dw_args = deep_wide_args(args)
    rules = deep_wide.general_rules(deep_wide.DEFAULT_WEIGHTS)
    data = {"settings": {"cells": args.cells, "eval_seeds": args.eval_seeds, "tune_seeds": args.tune_seeds,
                         "horizons": horizons, "device": args.device, "quick": args.quick, "data_root": args.data_root,
                         "levers_sha256": {lever: load_weights(LEVERS[lever][1]["weights"]).sha256 for lever in levers}},
            "levers": levers, "cells": {}}
    kept = []
    try:
        for cell in cells:
            name = deep_wide.cell_name(cell)
            if args.reuse_reports:
                seed_from_deep_wide(cell, rules, dw_args, horizons)
            kept.append(deep_wide.kept_cell(cell, rules, dw_args, horizons, reuse=True))
            base = kept[-1]["result"]["results"]
            block = {"tuned Adam": {}, "Adam 1e-3": {}}
            for h in horizons:
                results = base[str(h)]
                tuned_key = deep_wide.tuned_adam_key(results)
                block["tuned Adam"][str(h)] = {**results[tuned_key], "label": tuned_key}
                block["Adam 1e-3"][str(h)] = results["Adam (lr=1e-3, default)"]
            for lever in levers:
                if lever == "l2l-mnist":  # deep_wide's own runs of the report's rule, same seeds
                    block[lever] = {str(h): base[str(h)][SHIPPED_KEY] for h in horizons}
                else:
                    kept.append(cached_lever(cell, lever, args, horizons))
                    block[lever] = kept[-1]["result"]
            data["cells"][name] = block
    except DataNotFoundError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    data["summary"] = summarize(data)
    data["provenance"] = provenance("benchmarks.levers", argv, args.device, started)
    data["provenance"]["kept_runs"] = compute_note(kept)
    out = Path(args.out)
    write_json(out / f"{args.report}.json", data)
    plot(data, out, args.report)
    (out / f"{args.report}.md").write_text(to_markdown(data, args.report))
    print(to_markdown(data, args.report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
