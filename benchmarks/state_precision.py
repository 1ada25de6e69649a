"""What a half-precision LSTM state costs in quality: LearnedOptimizer(state_dtype=...) on the paper's tasks and the deep_wide grid.

    python -m benchmarks.state_precision --data-root ../shared/data      # base tasks and every deep_wide cell
    python -m benchmarks.state_precision --quick --data-root ../shared/data
    python -m benchmarks.state_precision --cells 1x20,2x100 --data-root DATA
    python -m benchmarks.state_precision --cells 1x1000 --no-base-tasks --resume --data-root DATA --out OUT

Each seed's curves and each task's result are kept in OUT/state_precision_tasks/ as soon as
they finish; with --resume, a kept seed or task of the same settings (rule file hash, seeds,
steps, device, data) is reused, so a long run that stops loses only the seed it was in, a
task with more seeds runs only the new ones, and runs of different cells into the same OUT
can be assembled by one last --resume run. One cell's seeds split over processes:

    for i in 0 1; do python -m benchmarks.state_precision --cells 1x1000 --no-base-tasks --seed-shard $i/2 --out OUT --data-root DATA & done; wait
    python -m benchmarks.state_precision --cells 1x1000 --no-base-tasks --resume --out OUT --data-root DATA

For each task, the shipped rule for it runs on the same evaluation seeds with its
state kept in float32, bfloat16 and float16 (the network computes in float32 either
way; see LearnedOptimizer's ``state_dtype``). Reported: final training loss and sum
of losses (mean ± s.e.), and each half dtype's mean final loss relative to float32's
(the target: no task more than 2% worse), with the standard error of that ratio from
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
from .common import add_out_argument, resolve_out, compute_note, fmt, git_commit, kept_run, markdown_table, mean_se, progress, provenance, write_json

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TARGET = 1.02  # a half state may cost at most 2% in mean final loss


def seed_curves(task, weights, seed: int, horizons, device) -> dict:
    """One evaluation seed, the same problem under every state dtype: {"losses": {dtype: [loss per step]},
    "evaluations": {dtype: {horizon: problem.evaluate() after that many steps}}} (for the MNIST tasks the
    loss and accuracy on the 10,000 test images; nothing for the quadratics; None once a run diverged)."""
    losses, evaluations = {}, {}
    for name, dtype in DTYPES.items():
        factory = lambda p: LearnedOptimizer(p, weights=weights, state_dtype=dtype)  # noqa: E731
        curve, evaluated = train_and_evaluate(task.sample(seed, device), factory, max(horizons), evaluate_at=horizons)
        losses[name] = curve.tolist()
        evaluations[name] = {str(h): e for h, e in evaluated.items()}
    return {"losses": losses, "evaluations": evaluations}


def _paired_ratio(values: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """Mean of ``values`` over the mean of ``reference`` (the same seeds), and the s.e. of that ratio from the
    per-seed differences (the comparison is paired)."""
    base = float(reference.double().mean())
    return float(values.double().mean()) / base, mean_se((values - reference).double().tolist())[1] / base


def summarize(curves: dict, horizons, evaluations: "dict | None" = None) -> dict:
    """Per horizon and dtype: final loss and sum of losses (mean ± s.e.), the per-seed final losses, and the
    ratio of mean final losses to float32's with its paired standard error. ``curves``: {dtype: (seeds, steps)}.
    With ``evaluations`` ({dtype: [per seed {horizon: metrics}]}) where every run has a test loss there: the
    same for the test loss (a final loss measured on 10,000 images, not one batch of 128), and the accuracy."""
    out = {}
    for h in horizons:
        block = {}
        for name, losses in curves.items():
            finals, sums = losses[:, h - 1], losses[:, :h].sum(1)
            block[name] = {"final_loss": dict(zip(("mean", "se"), mean_se(finals))),
                           "sum_of_losses": dict(zip(("mean", "se"), mean_se(sums)))}
        reference = curves["float32"][:, h - 1]
        for name, losses in curves.items():
            finals = losses[:, h - 1]
            block[name]["final_loss_per_seed"] = finals.tolist()
            ratio, se = _paired_ratio(finals, reference)
            block[name]["final_loss_ratio_to_float32"], block[name]["ratio_se"] = ratio, se
        runs = {name: [seed.get(str(h)) for seed in per_seed] for name, per_seed in (evaluations or {}).items()}
        if runs and all(e and "test_loss" in e for per_seed in runs.values() for e in per_seed):
            tests = {name: torch.tensor([e["test_loss"] for e in per_seed]) for name, per_seed in runs.items()}
            for name, per_seed in runs.items():
                ratio, se = _paired_ratio(tests[name], tests["float32"])
                block[name].update({
                    "test_loss": dict(zip(("mean", "se"), mean_se(tests[name]))),
                    "test_accuracy": dict(zip(("mean", "se"), mean_se([e["test_accuracy"] for e in per_seed]))),
                    "test_loss_per_seed": tests[name].tolist(),
                    "test_loss_ratio_to_float32": ratio, "test_ratio_se": se})
        out[str(h)] = block
    return out


def cached_task(label: str, task, weights, seeds, horizons, args, reuse: bool, commit: str) -> "dict | None":
    """The task's summary, kept in OUT/state_precision_tasks/ with its settings, compute time and ``commit`` (the
    code's at the start of the run: a long run outlives edits to the working tree); reused when the settings are
    equal. Every seed's curves are kept too (OUT/state_precision_tasks/LABEL/seed_N.json), so that a task with more
    seeds reuses those already run, and processes with different ``--seed-shard``s share one task's seeds; a
    shard's process returns None (the last run, without a shard, assembles the task)."""
    same = {"rule_sha256": weights.sha256, "seeds": list(seeds), "horizons": list(horizons), "device": args.device,
            "data_root": args.data_root}
    stem = re.sub(r"[^A-Za-z0-9.-]+", "_", label).strip("_")
    tasks = Path(args.out) / "state_precision_tasks"
    saved = tasks / (stem + ".json")
    if reuse and saved.exists():
        stored = json.loads(saved.read_text())
        if stored["settings"] == same:
            return stored
    index, count = args.seed_shard
    mine = [s for i, s in enumerate(seeds) if i % count == index]
    per_seed = {}
    for seed in progress(mine, len(mine), label):
        settings = {**same, "seeds": [seed]}
        per_seed[seed] = kept_run(tasks / stem / f"seed_{seed}.json", settings,
                                  lambda: seed_curves(task, weights, seed, horizons, args.device), reuse, commit)
    if count > 1:
        return None

    results = [per_seed[s]["result"] for s in seeds]
    stacked = {name: torch.tensor([r["losses"][name] for r in results]) for name in DTYPES}
    record = {"settings": same,
              "result": summarize(stacked, horizons, {name: [r["evaluations"][name] for r in results] for name in DTYPES}),
              # the seeds' code and compute, wherever and whenever they ran
              "git_commit": ", ".join(sorted({r["git_commit"] for r in per_seed.values() if "git_commit" in r})) or commit,
              "compute_time_s": round(sum(r.get("compute_time_s", 0.0) for r in per_seed.values()), 1)}
    write_json(saved, record)
    return record


def verdict(ratio: float, se: float) -> str:
    """Against the 2% target: within it, or over it by more (significant) or less than two paired s.e."""
    if ratio <= TARGET:
        return "within 2%"
    return "over 2% (> 2 s.e.)" if ratio - 2 * se > TARGET else "over 2%, within 2 s.e."


def to_markdown(data: dict) -> str:
    p = data["provenance"]
    s = data["settings"]
    rows, worst, counts, tested = [], {}, {}, False
    for task, by_h in data["tasks"].items():
        for h, block in by_h.items():
            for name in DTYPES:
                r = block[name]
                ratio, se = r["final_loss_ratio_to_float32"], r.get("ratio_se", float("nan"))
                said, test_said, test_ratio = "", "", ""
                if name != "float32":
                    worst[name] = max(worst.get(name, 0.0), ratio)
                    said = verdict(ratio, se)
                    counts.setdefault(name, {}).setdefault(said, 0)
                    counts[name][said] += 1
                    if "test_loss" in r:
                        tested, key = True, name + " (test loss)"
                        t_ratio, t_se = r["test_loss_ratio_to_float32"], r["test_ratio_se"]
                        worst[key] = max(worst.get(key, 0.0), t_ratio)
                        test_said, test_ratio = verdict(t_ratio, t_se), f"{t_ratio:.4f} ± {t_se:.4f}"
                        counts.setdefault(key, {}).setdefault(test_said, 0)
                        counts[key][test_said] += 1
                seeds = len(r["final_loss_per_seed"])
                label = task if seeds == s["eval_seeds"] else f"{task}, {seeds} seeds"
                rows.append([label if name == "float32" else "", h if name == "float32" else "", name,
                             fmt(**r["final_loss"]), fmt(**r["sum_of_losses"]),
                             "" if name == "float32" else f"{ratio:.4f} ± {se:.4f}", said,
                             fmt(**r["test_loss"]) if "test_loss" in r else "", test_ratio, test_said])
    header = ["task", "steps", "state dtype", "final loss", "sum of losses", "final loss / float32", "against 2%"]
    if tested:
        header += ["test loss", "test loss / float32", "against 2% (test loss)"]
    else:
        rows = [row[:7] for row in rows]
    computed = compute_note(data.get("compute", {}).values())
    lines = [
        "# Half-precision optimizer state: the quality cost",
        "",
        f"`{p['command']}` — commit `{p['git_commit']}`, {p['device']}, {p['wall_time_s']} s.{computed}",
        "",
        f"Mean ± s.e. over {s['eval_seeds']} evaluation seeds (where the task says no other number; the same seeds for every dtype). The network computes in "
        "float32; only the stored state is rounded. Ratio = mean final loss / float32's (target ≤ 1.02), ± its paired "
        "standard error (of the per-seed differences, over float32's mean)."
        + (" The final loss is that of the last training batch (128 examples), as in deep_wide; the test loss, on the "
           "10,000 MNIST test images after the same number of steps, reads the same models with far less noise."
           if tested else ""),
        "",
        markdown_table(header, rows),
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
    add_out_argument(parser)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--cell-seeds", default="",
                        help="fewer evaluation seeds for some cells, e.g. 1x1000=10,2x1000=10 (the largest cost hours each)")
    parser.add_argument("--no-base-tasks", action="store_true", help="only the deep_wide cells")
    parser.add_argument("--seed-shard", default="0/1", metavar="I/K",
                        help="run only the seeds whose index is I mod K (processes in parallel), keep them and stop; "
                        "a last run without it (and with --resume) assembles the report")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the tasks finished by an earlier run with the same settings (OUT/state_precision_tasks/)")
    args = parser.parse_args(argv)
    resolve_out(args)
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
        index, _, count = args.seed_shard.partition("/")
        args.seed_shard = (int(index), int(count))
        if not 0 <= args.seed_shard[0] < args.seed_shard[1]:
            raise ValueError(f"Invalid --seed-shard: {index}/{count}")
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
    if args.seed_shard[1] > 1:
        print(f"seed shard {args.seed_shard[0]}/{args.seed_shard[1]} kept in {Path(args.out) / 'state_precision_tasks'}")
        return 0
    data = {"settings": {k: v for k, v in vars(args).items() if k not in ("out", "resume", "seed_shard")},
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
