"""The long-horizon suite: learned rules against tuned Adam, AdamW and SGD on the models people train, for thousands
of steps.

    python -m benchmarks.long_horizon --data-root DATA --jobs 2                  # the whole suite (hours on 2 cores)
    python -m benchmarks.long_horizon --part dev --weights default,runs/mine.safetensors --report mine
    python -m benchmarks.long_horizon --quick                                    # a smoke test

Tasks: ``learned_optim.tasks.suite`` (12 small models: MLPs, a CNN with BatchNorm, a ResNet, a transformer LM, a GRU
LM, an autoencoder, logistic and least-squares regression), split into a development part and a held-out part
reported apart. Horizons: 1,000 and 10,000 steps (5,000 for the costliest tasks; each task's spec says).

Baselines, each with a constant learning rate and with a cosine schedule over the horizon (CosineAnnealingLR to 0):
Adam and AdamW (weight decay 0.01) with the learning rate tuned per task, horizon and schedule on a separate tuning
seed (by the final training loss), Adam at 1e-3, and SGD with momentum 0.9, tuned the same way. The learned rules run
as ``LearnedOptimizer(params, weights=RULE)`` with ``lr=1`` and with the same cosine schedule on their ``lr``.

Measured per run: the final training loss (on a fixed subset of the training data, not one minibatch), test loss and
accuracy, the training-loss curve, the parameter norm, the wall time. Every run is kept under OUT/long_horizon_runs/
(rerun the same command to continue); the report is NAME.json, NAME.md and NAME_<horizon>.png.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import torch

from learned_optim import LearnedOptimizer, load_weights
from learned_optim.tasks import EVAL_SEEDS, PARTS, SUITE, TUNING_SEEDS, make_task

from .common import (add_out_argument, fmt, git_commit, markdown_table, mean_se, provenance, pyplot, resolve_out,
                     write_json)

GRIDS = {
    "Adam": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
    "AdamW": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
    "SGD": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0),
}
SCHEDULES = ("constant", "cosine")
POINTS = 50  # training-loss points per curve (window means of the minibatch losses)
EVALS = 20  # evaluations of the training-subset loss per run, for the stability measures
# a run "ends near its best" when its final training loss is within this share of the whole decrease (plus 2% of the
# best) above the lowest it reached: minibatch noise moves a final iterate by less
NEAR_BEST = 0.05


def make_optimizer(family: str, lr: float, params, weights=None):
    if family == "learned":
        return LearnedOptimizer(params, weights=weights, lr=lr)
    if family == "Adam":
        return torch.optim.Adam(params, lr=lr)
    if family == "AdamW":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    if family == "SGD":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    raise ValueError(f"Unknown optimizer: {family!r}")


def run(spec: dict) -> dict:
    """One training run: ``spec`` names the task, seed, optimizer, lr, schedule, horizon and the extra step counts to
    read it at (a constant-lr run's first k steps are a k-step run)."""
    torch.set_num_threads(1)
    task = make_task("suite", task=spec["task"], data_root=spec["data_root"])
    problem = task.sample(spec["seed"])
    params = list(problem.model.parameters())
    weights = load_weights(spec["weights"]) if spec["family"] == "learned" else None
    opt = make_optimizer(spec["family"], spec["lr"], params, weights)
    horizon = spec["horizon"]
    schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=horizon) if spec["schedule"] == "cosine"
                else None)
    window = max(1, horizon // POINTS)
    evaluate_at = sorted({*spec.get("read_at", ()), horizon, *(round(horizon * (i + 1) / EVALS) for i in range(EVALS))})
    curve, window_losses, evals, norms = [], [], {0: problem.evaluate()}, {}
    started, diverged = time.perf_counter(), False
    for step in range(horizon):
        opt.zero_grad(set_to_none=True)
        loss = problem.loss(step)
        if not torch.isfinite(loss):
            diverged = True
            break
        loss.backward()
        opt.step()
        if schedule is not None:
            schedule.step()
        window_losses.append(float(loss.detach()))
        if len(window_losses) == window:
            curve.append(sum(window_losses) / window)
            window_losses = []
        if step + 1 in evaluate_at:
            evals[step + 1] = problem.evaluate()
            norms[step + 1] = math.sqrt(sum(float(p.detach().double().square().sum()) for p in params))
    return {"spec": spec, "curve": curve, "evals": {str(k): v for k, v in evals.items()},
            "norms": {str(k): v for k, v in norms.items()}, "diverged": diverged,
            "seconds": round(time.perf_counter() - started, 2), "git_commit": git_commit()}


def spec_key(spec: dict) -> str:
    text = json.dumps({k: v for k, v in spec.items() if k != "data_root"}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def final(record: dict, at: int, key: str = "train_loss") -> float:
    """A run's metric after ``at`` steps (inf where the run diverged before)."""
    value = record["evals"].get(str(at), {}).get(key)
    return float("inf") if value is None or not math.isfinite(value) else value


class Runner:
    """Runs specs (in ``jobs`` processes), keeping each result under ``folder`` so that a rerun reuses it."""

    def __init__(self, folder: Path, jobs: int, data_root) -> None:
        self.folder, self.jobs, self.data_root = folder, jobs, data_root
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, spec: dict) -> Path:
        return self.folder / spec["task"] / f"{spec_key(spec)}.json"

    def get(self, specs: list[dict]) -> list[dict]:
        specs = [{**s, "data_root": self.data_root} for s in specs]
        missing = [s for s in specs if not self.path(s).exists()]
        if missing:
            print(f"long_horizon: {len(missing)} runs to do ({len(specs) - len(missing)} kept)", file=sys.stderr)
            if self.jobs > 1 and len(missing) > 1:
                with concurrent.futures.ProcessPoolExecutor(self.jobs) as pool:
                    for record in pool.map(run, missing):
                        self._keep(record)
            else:
                for spec in missing:
                    self._keep(run(spec))
        return [json.loads(self.path(s).read_text()) for s in specs]

    def _keep(self, record: dict) -> None:
        path = self.path(record["spec"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record) + "\n")


def baseline_specs(task: str, family: str, schedule: str, horizon: int, lr: float, seeds, short: int | None):
    """Constant-lr runs of the long horizon are also read at the short one (their first steps are a short run)."""
    read_at = [short] if schedule == "constant" and short else []
    return [dict(task=task, family=family, lr=lr, schedule=schedule, horizon=horizon, seed=s, read_at=read_at)
            for s in seeds]


def tune(runner: Runner, task: str, horizons: list[int], tune_seeds, families=tuple(GRIDS)) -> dict:
    """{(family, schedule, horizon): best lr} on the tuning seeds by the mean final training loss."""
    long, short = max(horizons), min(horizons)
    specs, where = [], []
    for family in families:
        for lr in GRIDS[family]:
            for schedule in SCHEDULES:
                for horizon in ([long] if schedule == "constant" else horizons):
                    for spec in baseline_specs(task, family, schedule, horizon, lr, tune_seeds,
                                               short if len(horizons) > 1 else None):
                        specs.append(spec)
                        where.append((family, schedule, horizon, lr))
    records = runner.get(specs)
    scores: dict[tuple, dict[float, list[float]]] = {}
    for (family, schedule, horizon, lr), record in zip(where, records):
        for at in ([horizon] if schedule == "cosine" else horizons):
            scores.setdefault((family, schedule, at), {}).setdefault(lr, []).append(final(record, at))
    return {key: min(by_lr, key=lambda lr: sum(by_lr[lr]) / len(by_lr[lr])) for key, by_lr in scores.items()}


def summarize(records: list[dict], at: int) -> dict:
    finals = [final(r, at) for r in records]
    out = {"final_train_loss": dict(zip(("mean", "se"), mean_se(finals))), "diverged": sum(r["diverged"] for r in records),
           "seconds": sum(r["seconds"] for r in records) / len(records)}
    for key in ("test_loss", "test_accuracy", "train_accuracy"):
        values = [final(r, at, key) for r in records if key in r["evals"].get(str(at), {})]
        if values:
            out[key] = dict(zip(("mean", "se"), mean_se(values)))
    # stability over the run: the training-subset loss at every evaluation up to `at`
    near, below_start, norms = [], [], []
    for r in records:
        series = [v.get("train_loss", float("inf")) for k, v in sorted(r["evals"].items(), key=lambda kv: int(kv[0]))
                  if int(k) <= at]
        start, best, end = series[0], min(series), final(r, at)
        near.append(end <= best + NEAR_BEST * max(start - best, 0.0) + 0.02 * best)
        below_start.append(max(series) <= start * (1 + 1e-6) or r["diverged"])
        norms.append(r["norms"].get(str(at), float("inf")))
    out["ends_near_best"] = all(near) and not out["diverged"]
    out["never_above_start"] = all(below_start) and not out["diverged"]
    out["param_norm"] = sum(norms) / len(norms)
    return out


def evaluate_task(runner: Runner, task: str, rules: list[str], horizons: list[int], eval_seeds, tune_seeds,
                  families=tuple(GRIDS)) -> dict:
    best = tune(runner, task, horizons, tune_seeds, families)
    long, short = max(horizons), min(horizons)
    out = {"what": SUITE[task].what, "loss": SUITE[task].loss, "tuned_lr": {f"{f}/{s}/{h}": lr for (f, s, h), lr in best.items()}, "results": {}}
    for horizon in horizons:
        configs = {}
        for family in families:
            for schedule in SCHEDULES:
                lr = best[(family, schedule, horizon)]
                run_horizon = long if schedule == "constant" else horizon
                configs[f"{family} ({schedule}, lr={lr:g}, tuned)"] = baseline_specs(
                    task, family, schedule, run_horizon, lr, eval_seeds, short if len(horizons) > 1 else None)
        for schedule in SCHEDULES:
            configs[f"Adam ({schedule}, lr=1e-3)"] = baseline_specs(
                task, "Adam", schedule, long if schedule == "constant" else horizon, 1e-3, eval_seeds,
                short if len(horizons) > 1 else None)
            for rule in rules:
                sha = load_weights(rule).sha256
                run_horizon = long if schedule == "constant" else horizon
                configs[f"{rule} ({schedule})"] = [
                    dict(task=task, family="learned", lr=1.0, schedule=schedule, horizon=run_horizon, seed=s,
                         weights=rule, weights_sha256=sha,
                         read_at=[short] if schedule == "constant" and len(horizons) > 1 else [])
                    for s in eval_seeds]
        names = list(configs)
        flat = runner.get([spec for name in names for spec in configs[name]])
        results, curves, index = {}, {}, 0
        for name in names:
            records = flat[index : index + len(configs[name])]
            index += len(configs[name])
            results[name] = summarize(records, horizon)
            points = horizon // max(1, max(r["spec"]["horizon"] for r in records) // POINTS)
            curves[name] = [r["curve"][:points] for r in records]
        out["results"][str(horizon)] = {"summary": results, "curves": curves}
    return out


# Classification losses below this many nats are memorized training sets (the loss of a net that gives the right
# class 99.99% on every example); ratios between such losses measure float32 rounding, not optimization, so both
# sides of a ratio are read as at least this. Regression losses are compared as they are.
MEMORIZED = {"cross_entropy": 1e-4, "lm": 1e-4, "mse": 0.0, "autoencoder": 0.0}


def verdicts(task_result: dict, rule: str, horizon: int) -> dict:
    """The rule against the baselines at one horizon: ratios of mean final training losses (each read as at least
    the task's MEMORIZED floor), and the stability."""
    summary = task_result["results"][str(horizon)]["summary"]
    floor = MEMORIZED.get(task_result.get("loss", "mse"), 0.0)
    loss = {name: s["final_train_loss"]["mean"] for name, s in summary.items()}
    tuned_adam = min(v for k, v in loss.items() if k.startswith("Adam (") and k.endswith("tuned)"))
    # AdamW and SGD are left out of runs that name fewer --baselines: their ratios are then nan
    tuned_adamw = min((v for k, v in loss.items() if k.startswith("AdamW (") and k.endswith("tuned)")), default=math.nan)
    tuned_sgd = min((v for k, v in loss.items() if k.startswith("SGD (") and k.endswith("tuned)")), default=math.nan)
    adam_default = loss["Adam (constant, lr=1e-3)"]
    mine, mine_cos = loss[f"{rule} (constant)"], loss[f"{rule} (cosine)"]
    adam_norm = min((s for k, s in summary.items() if k.startswith("Adam (") and k.endswith("tuned)")),
                    key=lambda s: s["final_train_loss"]["mean"])["param_norm"]
    def ratio(a: float, b: float, floor: float = floor) -> float:
        if math.isnan(b):
            return math.nan
        a, b = max(a, floor), max(b, floor)
        return a / b if b > 0 and math.isfinite(a) else float("inf")

    stats = summary[f"{rule} (constant)"]
    return {
        "vs_tuned_adam": ratio(mine, tuned_adam), "cosine_vs_tuned_adam": ratio(mine_cos, tuned_adam),
        "vs_tuned_adamw": ratio(mine, tuned_adamw), "vs_tuned_sgd": ratio(mine, tuned_sgd),
        "vs_adam_1e-3": ratio(mine, adam_default), "ends_near_best": stats["ends_near_best"],
        "never_above_start": stats["never_above_start"], "norm_vs_tuned_adam": ratio(stats["param_norm"], adam_norm, 0.0),
    }


def _ratio_text(value: float) -> str:
    """A ratio of the rule's loss to a baseline's: **loses** above 1, a dash where the baseline was not run."""
    return "—" if math.isnan(value) else f"{value:.2f}" + (" **loses**" if value > 1 else "")


def report(data: dict) -> str:
    s, p = data["settings"], data["provenance"]
    lines = ["# The long-horizon suite: learned rules against tuned baselines", "",
             f"`{p['command']}` — commit `{p['git_commit']}`, {p['device']}, {p['wall_time_s']} s "
             f"(the kept runs took {data['compute_s']:.0f} s of single-thread compute).", "",
             f"{len(s['eval_seeds'])} evaluation seeds, tuning on seed {s['tune_seeds']}; final training loss on a fixed "
             "subset of the training data (mean ± s.e.). Tuned: the learning rate picked per task, horizon and schedule "
             "from " + "; ".join(f"{k} {{{', '.join(f'{v:g}' for v in GRIDS[k])}}}"
                                 for k in s.get("baselines", GRIDS)) +
             ". 'vs tuned Adam': the rule's (constant lr = 1) final loss over tuned Adam's better of constant and "
             "cosine, and likewise for AdamW, SGD and Adam at 1e-3; 'with cosine': the rule with a cosine schedule on "
             "its lr over tuned Adam's; **loses** above 1. Classification losses below 1e-4 (a memorized training "
             "set) count as 1e-4 in every ratio. Stable: ends within 5% of its decrease of the best it reached, never above its "
             "start; norm: its parameter norm over tuned Adam's.", ""]
    for rule in data["rules"]:
        for part, tasks in PARTS.items():
            tasks = [t for t in tasks if t in data["tasks"]]
            if not tasks:
                continue
            for horizon_name in ("short", "long"):
                rows, wins, count, worst, beats_default = [], 0, 0, 0.0, 0
                others = {f: 0 for f in s.get("baselines", GRIDS) if f != "Adam"}  # wins against the other baselines
                for task in tasks:
                    horizons = sorted(int(h) for h in data["tasks"][task]["results"])
                    horizon = horizons[0] if horizon_name == "short" else horizons[-1]
                    v = verdicts(data["tasks"][task], rule, horizon)
                    summary = data["tasks"][task]["results"][str(horizon)]["summary"]
                    count += 1
                    wins += v["vs_tuned_adam"] <= 1
                    for family in others:
                        others[family] += v[f"vs_tuned_{family.lower()}"] <= 1
                    beats_default += v["vs_adam_1e-3"] < 1
                    worst = max(worst, v["vs_tuned_adam"])
                    mine = summary[f"{rule} (constant)"]
                    acc = mine.get("test_accuracy")
                    rows.append([task, horizon, fmt(**mine["final_train_loss"]),
                                 *(_ratio_text(v[k]) for k in ("vs_tuned_adam", "cosine_vs_tuned_adam",
                                                               "vs_tuned_adamw", "vs_tuned_sgd", "vs_adam_1e-3")),
                                 fmt(**acc) if acc else (fmt(**mine["test_loss"]) if "test_loss" in mine else "—"),
                                 "yes" if v["ends_near_best"] and v["never_above_start"] else "**no**",
                                 f"{v['norm_vs_tuned_adam']:.2f}", f"{mine['seconds']:.0f}"])
                lines += [f"## `{rule}`, {part} part, {horizon_name} horizon", "",
                          f"At or below tuned Adam on {wins} of {count} tasks, worst ratio {worst:.2f}"
                          + "".join(f"; at or below tuned {f} on {n} of {count}" for f, n in others.items())
                          + f"; below Adam at 1e-3 on {beats_default} of {count}.", "",
                          markdown_table(["task", "steps", "final train loss", "vs tuned Adam", "with cosine",
                                          "vs tuned AdamW", "vs tuned SGD", "vs Adam 1e-3", "test accuracy (or loss)",
                                          "stable", "norm", "s / run"], rows), ""]
    lines += ["## Tasks", "", markdown_table(["task", "part", "what", "horizons"],
                                             [[t, next(k for k, v in PARTS.items() if t in v), SUITE[t].what,
                                               " / ".join(data["tasks"][t]["results"])] for t in data["tasks"]]), ""]
    return "\n".join(lines) + "\n"


def plot(data: dict, out: Path, stem: str) -> None:
    plt = pyplot()
    if plt is None:
        return
    for horizon_name in ("short", "long"):
        tasks = list(data["tasks"])
        cols = 4
        fig, axes = plt.subplots(math.ceil(len(tasks) / cols), cols, figsize=(16, 3.2 * math.ceil(len(tasks) / cols)),
                                 squeeze=False)
        for ax, task in zip(axes.flat, tasks):
            results = data["tasks"][task]["results"]
            horizon = sorted(int(h) for h in results)[0 if horizon_name == "short" else -1]
            curves = results[str(horizon)]["curves"]
            shown = [n for n in curves if "tuned" in n and n.startswith("Adam (")] + \
                    ["Adam (constant, lr=1e-3)"] + [f"{r} ({s})" for r in data["rules"] for s in SCHEDULES]
            for name in shown:
                runs = [c for c in curves[name] if c]
                if not runs:
                    continue
                n = min(len(c) for c in runs)
                t = torch.tensor([c[:n] for c in runs], dtype=torch.float64)
                mean, se = t.mean(0), (t.std(0) / math.sqrt(len(runs)) if len(runs) > 1 else torch.zeros(n))
                steps = torch.arange(1, n + 1) * horizon / POINTS
                (line,) = ax.plot(steps, mean, label=name, lw=1.2)
                ax.fill_between(steps, (mean - se).clamp_min(1e-12), mean + se, color=line.get_color(), alpha=0.2)
            ax.set_yscale("log")
            ax.set_title(f"{task} ({horizon} steps)", fontsize=9)
        for ax in axes.flat[len(tasks):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(out / f"{stem}_{horizon_name}.png", dpi=80)
        plt.close(fig)


def _caps(text: str) -> dict[str, int]:
    """'5000,fmnist_resnet=1000' -> {"": 5000, "fmnist_resnet": 1000}."""
    caps = {}
    for item in filter(None, text.split(",")):
        task, _, steps = item.rpartition("=")
        if task and task not in SUITE:
            raise argparse.ArgumentTypeError(f"unknown task {task!r}")
        if not steps.isdigit() or int(steps) < 1:
            raise argparse.ArgumentTypeError(f"invalid step count {steps!r}")
        caps[task] = int(steps)
    return caps


def _horizons(text: str) -> list[int]:
    """'10000,100000' -> [10000, 100000]: one or two step counts, each >= 1."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not 1 <= len(items) <= 2 or not all(item.isdigit() and int(item) >= 1 for item in items):
        raise argparse.ArgumentTypeError(f"invalid horizons {text!r} (one or two step counts, e.g. '10000,100000')")
    return sorted({int(item) for item in items})


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.long_horizon", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="default", help="comma-separated rules (shipped names or weight files)")
    parser.add_argument("--part", default="all", choices=("all", *PARTS))
    parser.add_argument("--tasks", default=None, help="comma-separated tasks (default: the part's)")
    parser.add_argument("--eval-seeds", type=int, default=3)
    parser.add_argument("--tune-seeds", type=int, default=1)
    parser.add_argument("--baselines", default=",".join(GRIDS),
                        help=f"comma-separated tuned baselines among {', '.join(GRIDS)} (Adam is always run)")
    parser.add_argument("--max-horizon", type=_caps, default={},
                        help="cap every task's horizons at N steps, and a task's own at TASK=N, e.g. "
                             "'5000,fmnist_resnet=1000' (the report says what ran)")
    parser.add_argument("--horizons", type=_horizons, default=None,
                        help="run every task at these step counts instead of its own (short,long), e.g. "
                             "'10000,100000'; applied before --max-horizon")
    parser.add_argument("--jobs", type=int, default=1, help="processes running runs side by side (one thread each)")
    parser.add_argument("--quick", action="store_true", help="30 and 60 steps (and, without --tasks, the cheapest task "
                        "of each part): a smoke test")
    parser.add_argument("--report", default="long_horizon")
    parser.add_argument("--data-root", default=None)
    add_out_argument(parser)
    args = parser.parse_args(argv)
    resolve_out(args)
    tasks = (args.tasks.split(",") if args.tasks else
             [t for part, names in PARTS.items() if args.part in ("all", part) for t in names])
    unknown = [t for t in tasks if t not in SUITE]
    if unknown:
        parser.exit(2, f"{parser.prog}: error: unknown task(s) {unknown} (the suite: {', '.join(SUITE)})\n")
    rules = args.weights.split(",")
    families = ("Adam", *[f for f in args.baselines.split(",") if f and f != "Adam"])
    if any(f not in GRIDS for f in families):
        parser.exit(2, f"{parser.prog}: error: --baselines: choose among {', '.join(GRIDS)}\n")
    try:
        for rule in rules:
            load_weights(rule)
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"{parser.prog}: error: --weights: {exc}\n")
    if args.quick:  # the cheapest task of each part, unless --tasks names others
        tasks = tasks if args.tasks else [t for t in tasks if t in ("regression_fullbatch", "linreg_illcond")]
        args.eval_seeds = 2
    out = Path(args.out)
    runner = Runner(out / "long_horizon_runs", args.jobs, args.data_root)
    started = time.perf_counter()
    eval_seeds, tune_seeds = list(EVAL_SEEDS[: args.eval_seeds]), list(TUNING_SEEDS[: args.tune_seeds])
    data = {"settings": {"tasks": tasks, "eval_seeds": eval_seeds, "tune_seeds": tune_seeds, "quick": args.quick,
                         "baselines": list(families), "max_horizon": args.max_horizon,
                         **({"horizons": args.horizons} if args.horizons else {})},
            "rules": rules, "tasks": {}}
    for task in tasks:
        horizons = [30, 60] if args.quick else list(args.horizons or SUITE[task].horizons)
        cap = args.max_horizon.get(task, args.max_horizon.get(""))
        if cap:
            horizons = sorted({min(h, cap) for h in horizons})
        data["tasks"][task] = evaluate_task(runner, task, rules, horizons, eval_seeds, tune_seeds, families)
    data["compute_s"] = sum(json.loads(p.read_text())["seconds"] for t in tasks
                            for p in (runner.folder / t).glob("*.json"))
    data["provenance"] = provenance("benchmarks.long_horizon", argv, "cpu", started)
    write_json(out / f"{args.report}.json", data)
    plot(data, out, args.report)
    text = report(data)
    (out / f"{args.report}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
