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
from typing import NamedTuple, Sequence

import torch

from . import analysis
from .features import normalize_per_tensor, tensor_input_columns
from .optimizer import LearnedOptimizer
from .tasks import EVAL_SEEDS, DataNotFoundError, make_task


def groups_of(model: torch.nn.Module) -> list[str]:
    """A group label per coordinate: the parameter's module path and kind, e.g. '0.weight' (flattened in order)."""
    labels = []
    for name, p in model.named_parameters():
        labels += [name] * p.numel()
    return labels


def seen(flat: torch.Tensor, sizes: Sequence[int], config) -> torch.Tensor:
    """A net's raw gradients (flat in float64, tensors of ``sizes`` entries) as the rule sees them: rescaled under
    grad_norm="tensor" (see features.py), each tensor on its own or, with grad_norm_power below 1, partly by the
    whole net's RMS."""
    if config.grad_norm == "tensor":
        return normalize_per_tensor(flat, list(sizes), config.grad_norm_target, config.grad_norm_power)
    return flat


class Recording(NamedTuple):
    """What ``record`` saw: states (seeds, steps + 1, coords, D), gradients as the rule sees them (seeds, steps,
    coords), losses (seeds, steps), the group label of each sampled coordinate (seeds × coords), and, for a rule with
    per-tensor inputs, the values it was given (seeds, steps, coords, config.tensor_inputs; None for a rule without)."""

    states: torch.Tensor
    grads: torch.Tensor
    losses: torch.Tensor
    labels: list
    inputs: "torch.Tensor | None"


def record(rule: analysis.LearnedRule, task, seeds: Sequence[int], steps: int, coords: int = 256) -> Recording:
    """Run the rule through LearnedOptimizer on each seed's problem and record a fixed sample of coordinates per
    problem (see ``Recording``)."""
    states, grads, losses, labels, inputs = [], [], [], [], []
    for seed in seeds:
        problem = task.sample(seed)
        params = list(problem.model.parameters())
        sizes = [p.numel() for p in params]
        total = sum(sizes)
        pick = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[: min(coords, total)]
        names = groups_of(problem.model)
        labels.append([names[i] for i in pick.tolist()])
        run_losses = []
        opt = LearnedOptimizer(params, weights=rule.weights, implementation="reference", state_dtype=torch.float64)
        run_states, run_grads, run_inputs = [rule.init_state(len(pick))], [], []
        for t in range(steps):
            opt.zero_grad()
            loss = problem.loss(t)
            loss.backward()
            run_losses.append(float(loss.detach()))
            # in float64, as the recording optimizer (state_dtype float64) computes it
            raw = torch.cat([p.grad.reshape(-1) for p in params]).double()
            run_grads.append(seen(raw, sizes, rule.config)[pick])
            opt.step()
            if rule.config.tensor_inputs:  # after the step: a grad_noise_input rule's EMA includes this gradient
                noise = [float(opt.state[p]["grad_noise"]) for p in params] if rule.config.grad_noise_input else None
                run_inputs.append(tensor_input_columns(raw, sizes, rule.config, noise)[pick])
            flat = torch.cat([torch.cat([opt.state[p][n] for n in rule.config.state_names], dim=1) for p in params])
            run_states.append(flat[pick])
        states.append(torch.stack(run_states))
        grads.append(torch.stack(run_grads))
        losses.append(torch.tensor(run_losses))
        if run_inputs:
            inputs.append(torch.stack(run_inputs))
    return Recording(torch.stack(states), torch.stack(grads), torch.stack(losses), labels,
                     torch.stack(inputs) if inputs else None)


def inputs_by_group(rule: analysis.LearnedRule, inputs: "torch.Tensor | None", labels) -> dict:
    """The median of each per-tensor input over each parameter group's recorded coordinates and steps."""
    if inputs is None:
        return {}
    names = rule.input_names
    found = {}
    for group in sorted({g for run in labels for g in run}):
        values = torch.cat([inputs[run][:, torch.tensor([x == group for x in run_labels])].reshape(-1, len(names))
                            for run, run_labels in enumerate(labels)])
        found[group] = {name: float(values[:, column].median()) for column, name in enumerate(names)}
    return found


def hold_inputs(rule: analysis.LearnedRule, inputs: "torch.Tensor | None") -> dict:
    """Set a rule's per-tensor inputs (``LearnedRule.tensor_rms_ratio``, ``net_scale``) to the medians of the
    recorded values, so that the tools study it where the runs took it rather than at 0; returns what was set
    (empty for a rule without such inputs)."""
    if inputs is None:
        return {}
    names = rule.input_names
    held = {}
    for column, name in enumerate(names):
        held[name] = float(inputs[..., column].reshape(-1).median())
        setattr(rule, name, held[name])
    return held


def schedule_by_group(rule: analysis.LearnedRule, by_group: dict, held: dict, steps: int, g_median: float) -> dict:
    """For a rule with per-tensor inputs: per parameter group, the step size for a gradient of median size along the
    autonomous trajectory with the inputs at that group's recorded medians (what the inputs do to each layer's steps:
    the gradients the rule sees are normalized per tensor, so these are the only per-layer signal it has). The rule's
    inputs are left at ``held``. Empty for a rule without such inputs."""
    found = {}
    for group, values in by_group.items():
        for name, value in values.items():
            setattr(rule, name, value)
        trajectory = analysis.autonomous(rule, max(steps, 200))
        found[group] = {str(t): secant_lr(rule, trajectory.states[t], g_median) for t in (0, 1, 10, steps) if t <= steps}
    for name, value in held.items():
        setattr(rule, name, value)
    return found


def pca(points: torch.Tensor, k: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, components (k, D), explained variance ratios (k,)) of points (N, D)."""
    mean = points.mean(0)
    _, s, v = torch.linalg.svd(points - mean, full_matrices=False)
    ratios = s**2 / (s**2).sum()
    return mean, v[:k], ratios[:k]


def secant_lr(rule, h: torch.Tensor, g: float) -> float:
    """−(Δx(g) − Δx(−g)) / 2g: the step size the rule takes for gradients of magnitude g in state h."""
    both = analysis.update_function(rule, h, torch.tensor([g, -g], dtype=h.dtype))
    return float(-(both[0] - both[1]) / (2 * g))


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
           "to that branch" if rule.config.preprocess == "log_sign" else ""),
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


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def layer_figure(rule, states, grads, labels, visited, out: Path) -> None:
    """Fig. 7: mean state trajectory of each parameter group in PCA coordinates; gradient magnitudes per group."""
    plt = _pyplot()
    if plt is None:
        return
    mean, comps, _ = pca(visited)
    groups = sorted({g for run in labels for g in run})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for group in groups:
        trajectories, magnitudes = [], []
        for run, run_labels in enumerate(labels):
            mask = torch.tensor([label == group for label in run_labels])
            if mask.any():
                trajectories.append(states[run][:, mask].mean(1))
                magnitudes.append(grads[run][:, mask].abs().reshape(-1))
        path = (torch.stack(trajectories).mean(0) - mean) @ comps.T
        (line,) = axes[0].plot(path[:, 0], path[:, 1], label=group)
        axes[0].plot(path[-1, 0], path[-1, 1], "o", color=line.get_color())
        values = torch.cat(magnitudes).clamp_min(1e-12).log10()
        axes[1].hist(values.numpy(), bins=40, histtype="step", density=True, label=group, color=line.get_color())
    axes[0].set_title("mean state of each parameter group (PCA)", fontsize=9)
    axes[1].set_xlabel("log10 |gradient|")
    axes[1].set_ylabel("density")
    axes[1].set_title("gradients of each group", fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "fig7_layers.png", dpi=100)
    plt.close(fig)


def loss_figure(name, losses, baselines: dict, out: Path, kappas: "torch.Tensor | None" = None) -> None:
    """Fig. 1: loss curves, mean ± standard error over the problems (and the condition numbers' histogram)."""
    plt = _pyplot()
    if plt is None:
        return
    if kappas is None:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
    else:
        fig, (ax, hist) = plt.subplots(1, 2, figsize=(9.5, 3.6), gridspec_kw={"width_ratios": [3, 2]})
        hist.hist(kappas.log10().numpy(), bins=20, color="gray")
        hist.set_xlabel("log10 condition number of AᵀA")
        hist.set_ylabel("problems")
    for label, curves in {name: losses, **baselines}.items():
        curves = curves.double()
        m = curves.mean(0)
        se = curves.std(0) / math.sqrt(curves.shape[0]) if curves.shape[0] > 1 else torch.zeros_like(m)
        (line,) = ax.plot(m, "--" if label == name else "-", label=label)
        ax.fill_between(range(m.numel()), (m - se).clamp_min(1e-12), m + se, color=line.get_color(), alpha=0.2)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "fig1_losses.png", dpi=100)
    plt.close(fig)


def figures(rule, visited, grads, found, lin, clip, schedule, s_curve, h0, g_hi, g_median, out: Path) -> None:
    plt = _pyplot()
    if plt is None:
        print("matplotlib is not installed: no figures", file=sys.stderr)
        return
    out.mkdir(parents=True, exist_ok=True)
    g = torch.linspace(-3, 3, 301, dtype=torch.float64)

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    hand = [
        (analysis.GradientDescent(0.5), [torch.zeros(1)], "gradient descent"),
        (analysis.ClippedGradientDescent(0.5, 1.0), [torch.zeros(1)], "clipped"),
        (analysis.Momentum(0.5, 0.9), [torch.tensor([v]) for v in (-2.0, 0.0, 2.0)], "momentum: states −2, 0, 2"),
        (analysis.RMSProp(0.5), [torch.tensor([v]) for v in (0.1, 1.0, 10.0)], "RMSProp: states 0.1, 1, 10"),
    ]
    for ax, (r, hs, title) in zip(axes, hand):
        for h in hs:
            ax.plot(g, analysis.update_function(r, h.double(), g))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("gradient")
    axes[0].set_ylabel("Δx")
    fig.tight_layout()
    fig.savefig(out / "fig2_hand_designed.png", dpi=100)
    plt.close(fig)

    mean, comps, ratios = pca(visited)
    proj = (visited - mean) @ comps.T
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    axes[0].scatter(proj[:, 0], proj[:, 1], s=1, alpha=0.2)
    if len(found.points):
        fp = (found.points[0] - mean) @ comps.T
        axes[0].plot(fp[0], fp[1], "ks", ms=8, label="fixed point, g = 0")
        axes[0].legend(fontsize=8)
    axes[0].set_title(f"visited states, PCA ({float(ratios.sum()):.0%} of variance)", fontsize=9)
    if lin is not None:
        ev = lin.eigenvalues
        points = axes[1].scatter(ev.real, ev.imag, c=lin.mode_lrs.real.abs().clamp_min(1e-12).log10(), cmap="viridis")
        fig.colorbar(points, ax=axes[1], label="log10 |mode learning rate|")
        circle = torch.linspace(0, 2 * math.pi, 200)
        axes[1].plot(circle.cos(), circle.sin(), "k:", lw=0.8)
        axes[1].set_aspect("equal")
    axes[1].set_title("eigenvalues at the fixed point", fontsize=9)
    if lin is not None:  # the paper's Fig. 3b: update functions at states displaced along the slowest mode
        h_star = found.points[0].double()
        values, vectors = torch.linalg.eig(lin.jacobian_h.double())
        slow = vectors[:, values.abs().argmax()].real
        slow = slow / slow.norm().clamp_min(1e-30)
        reach = ((visited.double() - h_star) @ slow).quantile(torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64))
        span = torch.linspace(-g_hi, g_hi, 201, dtype=torch.float64)
        cmap = plt.get_cmap("coolwarm")
        for k, a in enumerate(reach.tolist()):
            axes[2].plot(span, analysis.update_function(rule, h_star + a * slow, span), color=cmap(k / 4), label=f"{a:+.2g}")
        axes[2].legend(fontsize=7, title="along slow mode", title_fontsize=7)
        axes[2].set_xlabel("gradient")
        axes[2].set_ylabel("Δx")
        axes[2].set_title(f"update functions along the slowest mode (|λ| = {float(values.abs().max()):.3f})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "fig3_momentum.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    span = torch.linspace(-g_hi * 3, g_hi * 3, 601, dtype=torch.float64)
    ax.plot(span, analysis.update_function(rule, h0, span), label="Δx at the initial state")
    ax.set_xlabel("gradient")
    ax.set_ylabel("Δx")
    twin = ax.twinx()
    twin.hist(grads.reshape(-1).clamp(-g_hi * 3, g_hi * 3).numpy(), bins=80, color="gray", alpha=0.3)
    twin.set_yscale("log")
    twin.set_ylabel("gradients seen")
    ax.set_title("clipping: " + (f"saturates at |g| ≈ {clip.threshold:.3g}" if clip.saturates else "no saturation in range"), fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "fig4_clipping.png", dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].plot([secant_lr(rule, h, g_median) for h in schedule.states])
    axes[0].set_ylabel(f"step size for |g| = {g_median:.2g} (the median)")
    axes[1].plot(schedule.effective_lrs)
    axes[1].set_ylabel("−∂Δx/∂g at g = 0")
    for ax in axes:
        ax.set_xlabel("steps of the autonomous dynamics (g = 0)")
    fig.suptitle("a learned schedule: the rule's step size as its state evolves with no gradient", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "fig5_schedule.png", dpi=100)
    plt.close(fig)

    if s_curve:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        pts = torch.stack([p for _, p, _ in s_curve])
        proj = (pts - mean) @ comps.T
        colours = [gs for gs, _, _ in s_curve]
        sc = axes[0].scatter(proj[:, 0], proj[:, 1], c=colours, cmap="RdYlGn")
        fig.colorbar(sc, ax=axes[0], label="g*")
        axes[0].set_title("fixed points for constant gradients (PCA)", fontsize=9)
        axes[1].plot([gs for gs, _, _ in s_curve], [lr for _, _, lr in s_curve], "o-")
        axes[1].set_xlabel("g*")
        axes[1].set_ylabel("step size at the median |g|")
        fig.tight_layout()
        fig.savefig(out / "fig6_adaptation.png", dpi=100)
        plt.close(fig)


def to_markdown(summary: dict) -> str:
    m, c, s = summary["momentum"], summary["clipping"], summary["schedule"]
    lines = [
        f"# What `{summary['rule']}` does on {summary['task']['name']}",
        "",
        f"`{summary['command']}` — {summary['wall_time_s']} s.",
        "",
        f"Gradients seen (|g| quantiles 50/90/99.9%): "
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
        *([f"**Per-tensor inputs**, held at the medians of the recorded values for the tools above: "
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
