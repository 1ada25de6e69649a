"""Look inside an update rule: ``python -m learned_optim.analyze WEIGHTS --task TASK --out DIR``.

Runs the rule (through LearnedOptimizer) on a few problems of the task, records
the states and gradients of a sample of coordinates, and applies the tools of
``learned_optim.analysis`` (after Maheswaranathan et al., 2021). Writes PNG figures
and a summary of the mechanisms found (JSON and Markdown):

- fig2_hand_designed.png: update functions of the hand-designed rules, for reference
- fig3_momentum.png: visited states (PCA) with the fixed point at g = 0, and the
  eigenvalues of the linearized dynamics there, coloured by each mode's learning rate
- fig4_clipping.png: the update function at the initial state over the gradients
  the task produces, with their density
- fig5_schedule.png: the effective learning rate along the autonomous trajectory
- fig6_adaptation.png: fixed points for constant gradients g* (the S-curve, in
  PCA coordinates) and the effective learning rate at each
- fig7_layers.png: the state trajectories averaged over each layer's weights and
  biases (PCA coordinates), and the gradient magnitudes of each group
- fig1_losses.png (with ``--search-samples N``): the rule's loss curves against
  momentum, RMSprop and Adam tuned by random search (N samples each, on tuning seeds)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from . import analysis
from .analysis.figures import figures, layer_figure, loss_figure
from .analysis.record import hold_inputs, inputs_by_group, record, schedule_by_group, secant_lr
from .tasks import EVAL_SEEDS, DataNotFoundError, make_task


def analyze(rule: analysis.LearnedRule, task, seeds, steps: int, out: Path, fp_iterations: int = 1000,
            search_samples: int = 0) -> dict:
    states, grads, losses, labels, inputs = record(rule, task, seeds, steps)
    held = hold_inputs(rule, inputs)
    baselines_found = {}
    if search_samples > 0:  # fig 1: the rule against momentum, RMSprop and Adam tuned by random search
        from .baselines import SEARCH_SPACES, configured, random_search, train

        for name in SEARCH_SPACES:
            best, _ = random_search(task, name, search_samples, steps=steps)
            curves = torch.stack([train(task.sample(seed), configured(name, best), steps) for seed in seeds])
            baselines_found[name] = (best, curves)
    visited = states.reshape(-1, rule.state_size)
    magnitudes = grads.abs().reshape(-1)
    g_hi = float(torch.quantile(magnitudes, 0.999)) if magnitudes.numel() else 1.0
    h0 = rule.init_state(1)[0]

    # momentum: the fixed point at g = 0, searched from the end of the autonomous trajectory (where a stable
    # one draws the state) and from states the runs ended in
    schedule = analysis.autonomous(rule, max(steps, 200))
    ends = states[:, -1].reshape(-1, rule.state_size)
    picked = ends[torch.randperm(ends.shape[0], generator=torch.Generator().manual_seed(0))[:12]]
    starts = torch.cat([schedule.states[-4:], picked])
    found = analysis.fixed_points(rule, starts, 0.0, iterations=fp_iterations)
    modes = []
    lin = None
    if len(found.points):
        lin = analysis.linearize(rule, found.points[0])
        order = torch.argsort(lin.eigenvalues.abs(), descending=True)
        for i in order[:5].tolist():
            modes.append({
                "eigenvalue": [lin.eigenvalues[i].real.item(), lin.eigenvalues[i].imag.item()],
                "timescale_steps": float(lin.timescales[i]),
                "learning_rate": lin.mode_lrs[i].real.item(),
            })

    # clipping, schedule, adaptation
    clip_initial = analysis.saturation(rule, h0, g_max=max(g_hi, 1e-6) * 10)
    g_stars = torch.linspace(-g_hi, g_hi, 9, dtype=torch.float64)
    g_median = max(float(torch.quantile(magnitudes, 0.5)), 1e-12)
    s_curve = []
    for g_star in g_stars.tolist():
        fp = analysis.fixed_points(rule, starts[:4], g_star, iterations=fp_iterations)
        if len(fp.points):
            s_curve.append((g_star, fp.points[0], secant_lr(rule, fp.points[0], g_median)))

    by_group = inputs_by_group(rule, inputs, labels)
    group_schedule = schedule_by_group(rule, by_group, held, steps, g_median)

    summary = {
        "rule": rule.name,
        "task": task.describe(),
        "problems": list(seeds),
        "steps": steps,
        "gradient_magnitude_quantiles": {q: float(torch.quantile(magnitudes, q)) for q in (0.5, 0.9, 0.999)},
        "momentum": {
            "fixed_point_found": bool(len(found.points)),
            "fixed_point_residual": float(found.residuals[0]) if len(found.points) else None,
            "slowest_modes": modes,
        },
        "clipping": {
            "saturates_within_10x_the_largest_gradient": clip_initial.saturates,
            "threshold": clip_initial.threshold,
            "largest_update": clip_initial.max_update,
        },
        "schedule": {
            "effective_lr_at_steps": {str(t): float(schedule.effective_lrs[t]) for t in (0, 1, 10, steps) if t <= steps},
            "secant_lr_at_median_gradient_at_steps": {
                str(t): secant_lr(rule, schedule.states[t], g_median) for t in (0, 1, 10, steps) if t <= steps
            },
        },
        "adaptation": [{"g_star": g, "secant_lr_at_median_gradient": lr} for g, _, lr in s_curve],
        "inputs_held_at": held,
        "inputs_by_group": by_group,
        "schedule_by_group": group_schedule,
        "note": "effective learning rate = -dΔx/dg at g = 0"
        + ("; under the log-sign preprocessing the network sees (−1, e^p g) for |g| < e^-p, so this slope belongs "
           "to that branch" if rule.config.preprocess == "log_sign" else "")
        + ("; a moments rule reads g over the RMS of past gradients, which is 0 where every gradient was 0: the slope "
           "at g = 0 there is undefined (nan); read the step for a gradient of median size instead"
           if rule.config.preprocess == "moments" else ""),
    }
    summary["mean_training_loss"] = {rule.name: float(losses.mean())}
    summary["mean_training_loss"].update({f"{name} (random search, {search_samples} samples)": float(c.mean())
                                          for name, (_, c) in baselines_found.items()})
    summary["tuned_baselines"] = {name: best for name, (best, _) in baselines_found.items()}
    kappas = None
    if hasattr(task, "condition_number"):  # linreg: the task's spread of conditionings (the paper's Fig. 1a)
        histogram_seeds = range(seeds[0], seeds[0] + CONDITION_SAMPLES)
        kappas = torch.tensor([task.condition_number(seed) for seed in histogram_seeds], dtype=torch.float64)
        counts, edges = torch.histogram(kappas.log10(), bins=20)
        summary["condition_numbers"] = {
            "problems": CONDITION_SAMPLES, "seeds": [histogram_seeds.start, histogram_seeds.stop],
            "min": float(kappas.min()), "median": float(kappas.median()), "max": float(kappas.max()),
            "log10_histogram": {"edges": edges.tolist(), "counts": [int(c) for c in counts]},
            "of_the_analysed_problems": [task.condition_number(seed) for seed in seeds],
        }
    figures(rule, visited, grads, found, lin, clip_initial, schedule, s_curve, h0, g_hi, g_median, out)
    layer_figure(rule, states, grads, labels, visited, out)
    if baselines_found or kappas is not None:
        loss_figure(rule.name, losses, {k: c for k, (_, c) in baselines_found.items()}, out, kappas)
    return summary


CONDITION_SAMPLES = 1000  # problems whose condition numbers make the linreg histogram


def to_markdown(summary: dict) -> str:
    m, c, s = summary["momentum"], summary["clipping"], summary["schedule"]
    lines = [
        f"# What `{summary['rule']}` does on {summary['task']['name']}",
        "",
        f"`{summary['command']}` — {summary['wall_time_s']} s.",
        "",
        "Gradients seen (|g| quantiles 50/90/99.9%): "
        + ", ".join(f"{v:.3g}" for v in summary["gradient_magnitude_quantiles"].values()) + ".",
        "",
        "**Momentum.** " + (
            f"A fixed point at g = 0 (residual {m['fixed_point_residual']:.1e}); its slowest modes: "
            + "; ".join(f"|λ| = {math.hypot(*x['eigenvalue']):.3f} (timescale {x['timescale_steps']:.1f} steps, learning rate {x['learning_rate']:.3g})" for x in m["slowest_modes"][:3])
            if m["fixed_point_found"] else "No fixed point at g = 0 was found."
        ),
        "",
        "**Clipping.** " + (f"The update saturates at |g| ≈ {c['threshold']:.3g} (largest update {c['largest_update']:.3g})."
                            if c["saturates_within_10x_the_largest_gradient"] else
                            f"No saturation within 10× the largest gradient seen (largest update {c['largest_update']:.3g})."),
        "",
        "**Schedule.** Effective learning rate along the autonomous trajectory: "
        + ", ".join(f"step {k}: {v:.3g}" for k, v in s["effective_lr_at_steps"].items())
        + "; the step size for a gradient of median size along it: "
        + ", ".join(f"step {k}: {v:.3g}" for k, v in s["secant_lr_at_median_gradient_at_steps"].items()) + ".",
        "",
        "**Adaptation.** Step size for a gradient of median size at the fixed point of each constant gradient g* "
        "(where a search converged): "
        + (", ".join(f"g* = {a['g_star']:.2g}: {a['secant_lr_at_median_gradient']:.3g}" for a in summary["adaptation"]) or "none converged") + ".",
        "",
        f"Note: {summary['note']}.",
        "",
        *(["**Per-tensor inputs**, held at the medians of the recorded values for the tools above: "
           + ", ".join(f"{k} = {v:.3g}" for k, v in summary["inputs_held_at"].items()) + "; by group: "
           + "; ".join(f"{g}: " + ", ".join(f"{v:.3g}" for v in vals.values())
                       for g, vals in summary["inputs_by_group"].items()) + ".", "",
           "**Per group**, with the inputs at that group's medians: the step size for a gradient of median size along "
           "the autonomous trajectory: "
           + "; ".join(f"{g}: " + ", ".join(f"step {k}: {v:.3g}" for k, v in steps_.items())
                       for g, steps_ in summary.get("schedule_by_group", {}).items()) + ".", ""]
          if summary.get("inputs_held_at") else []),
        *([f"**Condition numbers** of the Hessians AᵀA of {summary['condition_numbers']['problems']} of the task's problems: "
           f"min {summary['condition_numbers']['min']:.3g}, median {summary['condition_numbers']['median']:.3g}, "
           f"max {summary['condition_numbers']['max']:.3g} (histogram in fig1_losses.png).", ""]
          if "condition_numbers" in summary else []),
        "**Mean training loss over the runs** (the paper's meta-objective): "
        + ", ".join(f"{k}: {v:.4g}" for k, v in summary["mean_training_loss"].items()) + ".",
        "",
        "![momentum](fig3_momentum.png) ![clipping](fig4_clipping.png) ![schedule](fig5_schedule.png) ![adaptation](fig6_adaptation.png) ![layers](fig7_layers.png)"
        + (" ![losses](fig1_losses.png)" if len(summary["mean_training_loss"]) > 1 or "condition_numbers" in summary else ""),
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m learned_optim.analyze", description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", help="a shipped name, 'default', or a .safetensors path")
    parser.add_argument("--task", default="mnist_mlp")
    parser.add_argument("--out", required=True)
    parser.add_argument("--problems", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--fp-iterations", type=int, default=1000, help="optimizer steps of each fixed-point search")
    parser.add_argument("--search-samples", type=int, default=0,
                        help="random-search samples per baseline for fig. 1 (the paper drew 2,500; 0: no fig. 1)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        rule = analysis.LearnedRule(args.weights)
        task = make_task(args.task, data_root=args.data_root)
    except (ValueError, FileNotFoundError, DataNotFoundError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    out = Path(args.out)
    summary = analyze(rule, task, list(EVAL_SEEDS[: args.problems]), args.steps, out, args.fp_iterations, args.search_samples)
    summary["command"] = "python -m learned_optim.analyze " + " ".join(argv)
    summary["wall_time_s"] = round(time.perf_counter() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "summary.md").write_text(to_markdown(summary))
    print(to_markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
