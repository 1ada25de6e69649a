"""Looking inside an update rule, after Maheswaranathan et al. (2021), "Reverse engineering learned optimizers".

All tools take a ``Rule`` (see rules.py): a state h, a gradient g, and
F: (h, g) -> (Δx, h'). Nothing here knows how the rule is built.

- ``update_function``: Δx(g; h) over a range of gradients at a fixed state.
- ``effective_lr``: −∂Δx/∂g at g = 0 (autograd), the step size the rule takes for
  a small gradient in that state.
- ``saturation``: where |Δx| stops growing with |g| (a learned gradient clip).
- ``fixed_points``: states with F(h*, g*) = h*, found by minimizing
  ½‖F(h, g*) − h‖² from many initial states, deduplicated, with their residuals.
- ``linearize``: the Jacobians at a fixed point and their eigenmodes, each read as
  a momentum term: the impulse response of Δx to a gradient k ≥ 1 steps ago is
  Σ_i −α_i λ_i^k, with λ_i the mode's eigenvalue (its momentum β, timescale
  −1/ln|λ_i| steps) and α_i its learning rate (appendix C of the paper: aggregated momentum).
- ``autonomous``: the trajectory from the initial state with g = 0 and the effective
  learning rate along it (a learned schedule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .rules import Rule


def update_function(rule: Rule, h: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Δx for each gradient in ``grads`` (G,) at the single state ``h`` (state_size,)."""
    with torch.no_grad():
        update, _ = rule.step(h.expand(grads.numel(), -1), grads.to(h.dtype))
    return update


def effective_lr(rule: Rule, h: torch.Tensor) -> torch.Tensor:
    """−∂Δx/∂g at g = 0 for each state in ``h`` (N, state_size) or a single state (state_size,)."""
    states = h.reshape(-1, h.shape[-1])
    g = torch.zeros(states.shape[0], dtype=states.dtype, requires_grad=True)
    update, _ = rule.step(states.detach(), g)
    (slope,) = torch.autograd.grad(update.sum(), g)
    out = -slope
    return out.reshape(h.shape[:-1]) if h.dim() > 1 else out[0]


@dataclass
class Saturation:
    saturates: bool  # whether the update stops growing within the range
    threshold: float  # the |g| at which |Δx| comes within 0.1% of its largest value (nan if it does not saturate)
    max_update: float  # the largest |Δx| over the range


def saturation(rule: Rule, h: torch.Tensor, g_max: float = 100.0, points: int = 4001) -> Saturation:
    """Whether Δx(g) flattens for large |g|, and where: the signature of gradient clipping."""
    grads = torch.linspace(0, g_max, points, dtype=h.dtype)
    size = update_function(rule, h, grads).abs()
    largest = float(size.max())
    reached = int(torch.nonzero(size >= (1 - 1e-3) * largest)[0])
    # saturated: the last tenth of the range adds less than 1% to the update
    tail = int(0.9 * points)
    saturates = largest > 0 and float(size[-1] - size[tail]) < 0.01 * largest
    return Saturation(saturates, float(grads[reached]) if saturates else float("nan"), largest)


@dataclass
class FixedPoints:
    points: torch.Tensor  # (K, state_size), distinct fixed points
    residuals: torch.Tensor  # (K,) ½‖F(h*, g*) − h*‖²
    g_star: float


def fixed_points(
    rule: Rule,
    initial: torch.Tensor,
    g_star: float = 0.0,
    iterations: int = 2000,
    lr: float = 0.01,
    tolerance: float = 1e-8,
    distinct: float = 1e-3,
) -> FixedPoints:
    """Minimize q(h) = ½‖F(h, g*) − h‖² from each initial state (N, state_size); keep distinct minima below tolerance."""
    h = initial.detach().clone().requires_grad_(True)
    g = torch.full((h.shape[0],), g_star, dtype=h.dtype)
    optimizer = torch.optim.Adam([h], lr=lr)
    for _ in range(iterations):
        optimizer.zero_grad()
        _, nxt = rule.step(h, g)
        q = 0.5 * ((nxt - h) ** 2).sum(1)
        q.sum().backward()
        optimizer.step()
    h = h.detach()
    with torch.no_grad():
        _, nxt = rule.step(h, g)
        q = 0.5 * ((nxt - h) ** 2).sum(1)
    keep, residuals = [], []
    for i in torch.argsort(q).tolist():
        if q[i] > tolerance:
            break
        if all(float((h[i] - h[j]).norm()) > distinct for j in keep):
            keep.append(i)
            residuals.append(float(q[i]))
    points = h[keep] if keep else h[:0]
    return FixedPoints(points, torch.tensor(residuals, dtype=h.dtype), g_star)


@dataclass
class Linearization:
    jacobian_h: torch.Tensor  # ∂h'/∂h (D, D)
    jacobian_g: torch.Tensor  # ∂h'/∂g (D,)
    readout_h: torch.Tensor  # ∂Δx/∂h (D,)
    readout_g: float  # ∂Δx/∂g
    eigenvalues: torch.Tensor  # (D,) complex
    mode_lrs: torch.Tensor  # (D,) complex: α_i of each mode
    timescales: torch.Tensor  # (D,) −1/ln|λ_i| steps (inf where |λ| = 1)


def linearize(rule: Rule, h_star: torch.Tensor, g_star: float = 0.0) -> Linearization:
    """Jacobians of (Δx, h') at (h*, g*) and the momentum reading of each eigenmode."""
    h_star = h_star.detach().reshape(1, -1)
    g = torch.tensor([g_star], dtype=h_star.dtype)

    def next_state(h, g):
        return rule.step(h, g)[1]

    def update(h, g):
        return rule.step(h, g)[0]

    jh = torch.autograd.functional.jacobian(lambda h: next_state(h, g)[0], h_star)[:, 0, :]
    jg = torch.autograd.functional.jacobian(lambda gg: next_state(h_star, gg)[0], g)[:, 0]
    rh = torch.autograd.functional.jacobian(lambda h: update(h, g)[0], h_star)[0, :]
    rg = torch.autograd.functional.jacobian(lambda gg: update(h_star, gg)[0], g)[0]
    eigenvalues, right = torch.linalg.eig(jh)
    left = torch.linalg.inv(right)  # rows: left eigenvectors, normalized so that left @ right = I
    # impulse response of Δx to a gradient k >= 1 steps back: rh · J^(k-1) · jg = Σ_i (rh·r_i)(l_i·jg) λ_i^(k-1)
    weights = (rh.to(right.dtype) @ right) * (left @ jg.to(right.dtype))
    safe = torch.where(eigenvalues.abs() > 1e-12, eigenvalues, torch.ones_like(eigenvalues))
    mode_lrs = torch.where(eigenvalues.abs() > 1e-12, -weights / safe, torch.zeros_like(weights))
    magnitude = eigenvalues.abs().double()
    timescales = torch.where((magnitude > 0) & (magnitude < 1), -1 / magnitude.clamp_min(1e-300).log(), torch.full_like(magnitude, math.inf))
    return Linearization(jh, jg, rh, float(rg), eigenvalues, mode_lrs, timescales)


@dataclass
class Autonomous:
    states: torch.Tensor  # (steps + 1, state_size), from the initial state with g = 0
    effective_lrs: torch.Tensor  # (steps + 1,)


def autonomous(rule: Rule, steps: int = 100, h0: torch.Tensor | None = None) -> Autonomous:
    """Iterate h ← F(h, 0) from the initial state; the effective learning rate at each visited state is the schedule."""
    h = rule.init_state(1) if h0 is None else h0.reshape(1, -1)
    states = [h[0]]
    with torch.no_grad():
        for _ in range(steps):
            _, h = rule.step(h, torch.zeros(1, dtype=h.dtype))
            states.append(h[0])
    trajectory = torch.stack(states)
    return Autonomous(trajectory, effective_lr(rule, trajectory))
