"""What a half-precision LSTM state costs in quality: LearnedOptimizer(state_dtype=...) on the paper's tasks and the deep_wide grid.

    python -m benchmarks.state_precision --data-root ../shared/data      # base tasks and every deep_wide cell
    python -m benchmarks.state_precision --quick --data-root ../shared/data
    python -m benchmarks.state_precision --cells 1x20,2x100 --data-root DATA
    python -m benchmarks.state_precision --cells 1x1000 --no-base-tasks --resume --data-root DATA --out OUT

Each task's result is kept in OUT/state_precision_tasks/ as soon as it finishes; with
--resume, a kept task of the same settings (rule file hash, seeds, steps, device, data)
is reused, so a long run that stops loses only the task it was in, and runs of
different cells into the same OUT can be assembled by one last --resume run.

For each task, the shipped rule for it runs on the same evaluation seeds with its
state kept in float32, bfloat16 and float16 (the network computes in float32 either
way; see LearnedOptimizer's ``state_dtype``). Reported: final training loss and sum
of losses (mean ± s.e.), and each half dtype's mean final loss relative to float32's
(issue 6's target: no task more than 2% worse), with the standard error of that ratio from
the per-seed differences (every dtype runs the same seeds, so the comparison is paired) and
whether an excess over 2% is more than two such standard errors. Tasks: the 10-d quadratics
(l2l-quadratic) and the base MNIST MLP (l2l-mnist), 100 steps; the deep_wide cells
(the default rule), run to the longest horizon and read at each.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch

from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import train_and_evaluate
from learned_optim.tasks import EVAL_SEEDS, DataNotFoundError, make_task

from . import deep_wide
from .common import DEFAULT_OUT, compute_note, fmt, git_commit, kept_run, markdown_table, mean_se, progress, provenance, write_json

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TARGET = 1.02  # a half state may cost at most 2% in mean final loss


def run_task(label: str, task, weights, seeds, horizons, device) -> dict:
    longest = max(horizons)
    curves = {}
    for name, dtype in DTYPES.items():
        runs = []
        for seed in progress(seeds, len(seeds), f"{label}: {name}"):
            factory = lambda p: LearnedOptimizer(p, weights=weights, state_dtype=dtype)  # noqa: E731
            runs.append(train_and_evaluate(task.sample(seed, device), factory, longest)[0])
        curves[name] = torch.stack(runs)
    out = {}
    for h in horizons:
        block = {}
        for name, losses in curves.items():
            finals, sums = losses[:, h - 1], losses[:, :h].sum(1)
            block[name] = {"final_loss": dict(zip(("mean", "se"), mean_se(finals))),
                           "sum_of_losses": dict(zip(("mean", "se"), mean_se(sums)))}
        reference = curves["float32"][:, h - 1]
        base = float(reference.double().mean())
        for name, losses in curves.items():
            finals = losses[:, h - 1]
            block[name]["final_loss_per_seed"] = finals.tolist()
            block[name]["final_loss_ratio_to_float32"] = block[name]["final_loss"]["mean"] / base
            # paired: the same seeds under both dtypes, so the s.e. of the ratio is that of the per-seed differences
            block[name]["ratio_se"] = mean_se((finals - reference).double().tolist())[1] / base
        out[str(h)] = block
    return out


def cached_task(label: str, task, weights, seeds, horizons, args, reuse: bool, commit: str) -> dict:
    """run_task, kept in OUT/state_precision_tasks/ with its settings, compute time and ``commit`` (the code's
    at the start of the run: a long run outlives edits to the working tree); reused when the settings are equal."""
    same = {"rule_sha256": weights.sha256, "seeds": list(seeds), "horizons": list(horizons), "device": args.device,
            "data_root": args.data_root}
    saved = Path(args.out) / "state_precision_tasks" / (re.sub(r"[^A-Za-z0-9.-]+", "_", label).strip("_") + ".json")
    return kept_run(saved, same, lambda: run_task(label, task, weights, seeds, horizons, args.device), reuse, commit)


def verdict(ratio: float, se: float) -> str:
    """Against the 2% target: within it, or over it by more (significant) or less than two paired s.e."""
    if ratio <= TARGET:
        return "within 2%"
    return "over 2% (> 2 s.e.)" if ratio - 2 * se > TARGET else "over 2%, within 2 s.e."


def to_markdown(data: dict) -> str:
    p = data["provenance"]
    s = data["settings"]
    rows, worst, counts = [], {}, {}
    for task, by_h in data["tasks"].items():
        for h, block in by_h.items():
            for name in DTYPES:
                r = block[name]
                ratio, se = r["final_loss_ratio_to_float32"], r.get("ratio_se", float("nan"))
                said = ""
                if name != "float32":
                    worst[name] = max(worst.get(name, 0.0), ratio)
                    said = verdict(ratio, se)
                    counts.setdefault(name, {}).setdefault(said, 0)
                    counts[name][said] += 1
                seeds = len(r["final_loss_per_seed"])
                label = task if seeds == s["eval_seeds"] else f"{task}, {seeds} seeds"
                rows.append([label if name == "float32" else "", h if name == "float32" else "", name,
                             fmt(**r["final_loss"]), fmt(**r["sum_of_losses"]),
                             "" if name == "float32" else f"{ratio:.4f} ± {se:.4f}", said])
    computed = compute_note(data.get("compute", {}).values())
    lines = [
        "# Half-precision optimizer state: the quality cost",
        "",
        f"`{p['command']}` — commit `{p['git_commit']}`, {p['device']}, {p['wall_time_s']} s.{computed}",
        "",
        f"Mean ± s.e. over {s['eval_seeds']} evaluation seeds (where the task says no other number; the same seeds for every dtype). The network computes in "
        "float32; only the stored state is rounded. Ratio = mean final loss / float32's (target ≤ 1.02), ± its paired "
        "standard error (of the per-seed differences, over float32's mean).",
        "",
        markdown_table(["task", "steps", "state dtype", "final loss", "sum of losses", "final loss / float32", "against 2%"], rows),
        "",
        "Worst ratio: " + ", ".join(f"{name} {r:.4f}" for name, r in worst.items()) + ".",
        "",
        "Verdicts: " + "; ".join(f"{name}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())) for name, c in counts.items()) + ".",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.state_precision", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cells", default=",".join(deep_wide.cell_name(c) for c in deep_wide.CELLS),
                        help="deep_wide cells ('' for none)")
    parser.add_argument("--horizons", default="100,200", help="deep_wide cells' step counts")
    parser.add_argument("--eval-seeds", type=int, default=None, help="20 (2 with --quick)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--cell-seeds", default="",
                        help="fewer evaluation seeds for some cells, e.g. 1x1000=10,2x1000=10 (the largest cost hours each)")
    parser.add_argument("--no-base-tasks", action="store_true", help="only the deep_wide cells")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the tasks finished by an earlier run with the same settings (OUT/state_precision_tasks/)")
    args = parser.parse_args(argv)
    if args.quick:
        args.cells, args.horizons = "1x20", "5,10"
    if args.eval_seeds is None:
        args.eval_seeds = 2 if args.quick else 20
    try:
        cells = deep_wide.parse_cells(args.cells) if args.cells else []
        horizons = sorted(int(h) for h in args.horizons.split(","))
        cell_seeds = {}
        for item in filter(None, args.cell_seeds.split(",")):
            name, _, count = item.partition("=")
            (cell,) = deep_wide.parse_cells(name)
            cell_seeds[cell] = int(count)
            if not 1 <= cell_seeds[cell] <= len(EVAL_SEEDS):
                raise ValueError(f"Invalid seed count in --cell-seeds: {item!r}")
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    started = time.perf_counter()
    seeds = list(EVAL_SEEDS[: args.eval_seeds])
    base_steps = [10] if args.quick else [100]
    stored, commit = {}, git_commit()
    try:
        for task_name, rule in () if args.no_base_tasks else (("quadratic", "l2l-quadratic"), ("mnist_mlp", "l2l-mnist")):
            task = make_task(task_name, data_root=args.data_root)
            label = f"{task_name} ({rule})"
            stored[label] = cached_task(label, task, load_weights(rule), seeds, base_steps, args, args.resume, commit)
        default = load_weights("default")
        for cell in cells:
            layers, units, activation = cell
            task = make_task("mnist_mlp", data_root=args.data_root, hidden=(units,) * layers, activation=activation)
            label = f"deep_wide {deep_wide.cell_name(cell)} (default)"
            cell_eval = list(EVAL_SEEDS[: cell_seeds.get(cell, args.eval_seeds)])
            stored[label] = cached_task(label, task, default, cell_eval, horizons, args, args.resume, commit)
    except DataNotFoundError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    data = {"settings": {k: v for k, v in vars(args).items() if k not in ("out", "resume")},
            "tasks": {label: s["result"] for label, s in stored.items()},
            "compute": {label: {k: s[k] for k in ("git_commit", "compute_time_s") if k in s} for label, s in stored.items()},
            "provenance": provenance("benchmarks.state_precision", argv, args.device, started)}
    out = Path(args.out)
    write_json(out / "state_precision.json", data)
    text = to_markdown(data)
    (out / "state_precision.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
