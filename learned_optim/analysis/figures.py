"""The figures of ``python -m learned_optim.analyze`` (after Maheswaranathan et al., 2021; matplotlib optional)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from .record import pca, secant_lr
from .rules import ClippedGradientDescent, GradientDescent, Momentum, RMSProp
from .tools import update_function


def pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def layer_figure(rule, states, grads, labels, visited, out: Path) -> None:
    """Fig. 7: mean state trajectory of each parameter group in PCA coordinates; gradient magnitudes per group."""
    plt = pyplot()
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
    plt = pyplot()
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
    plt = pyplot()
    if plt is None:
        print("matplotlib is not installed: no figures", file=sys.stderr)
        return
    out.mkdir(parents=True, exist_ok=True)
    g = torch.linspace(-3, 3, 301, dtype=torch.float64)

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    hand = [
        (GradientDescent(0.5), [torch.zeros(1)], "gradient descent"),
        (ClippedGradientDescent(0.5, 1.0), [torch.zeros(1)], "clipped"),
        (Momentum(0.5, 0.9), [torch.tensor([v]) for v in (-2.0, 0.0, 2.0)], "momentum: states −2, 0, 2"),
        (RMSProp(0.5), [torch.tensor([v]) for v in (0.1, 1.0, 10.0)], "RMSProp: states 0.1, 1, 10"),
    ]
    for ax, (r, hs, title) in zip(axes, hand):
        for h in hs:
            ax.plot(g, update_function(r, h.double(), g))
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
            axes[2].plot(span, update_function(rule, h_star + a * slow, span), color=cmap(k / 4), label=f"{a:+.2g}")
        axes[2].legend(fontsize=7, title="along slow mode", title_fontsize=7)
        axes[2].set_xlabel("gradient")
        axes[2].set_ylabel("Δx")
        axes[2].set_title(f"update functions along the slowest mode (|λ| = {float(values.abs().max()):.3f})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "fig3_momentum.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    span = torch.linspace(-g_hi * 3, g_hi * 3, 601, dtype=torch.float64)
    ax.plot(span, update_function(rule, h0, span), label="Δx at the initial state")
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
