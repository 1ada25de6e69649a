"""Recording a rule's runs for the analysis tools: states, gradients as the rule sees them, per-tensor inputs.

``record`` runs the rule through LearnedOptimizer (the reference implementation, float64 state) on a task's
problems and keeps a fixed sample of coordinates; the rest helps the tools study a rule at the inputs its runs
gave it.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from ..features import flat_terms
from ..optimizer import LearnedOptimizer
from .rules import LearnedRule
from .tools import autonomous, update_function


def groups_of(model: torch.nn.Module) -> list[str]:
    """A group label per coordinate: the parameter's module path and kind, e.g. '0.weight' (flattened in order)."""
    labels = []
    for name, p in model.named_parameters():
        labels += [name] * p.numel()
    return labels


class Recording(NamedTuple):
    """What ``record`` saw: states (seeds, steps + 1, coords, D), gradients as the rule sees them (seeds, steps,
    coords), losses (seeds, steps), the group label of each sampled coordinate (seeds × coords), and, for a rule with
    per-tensor inputs, the values it was given (seeds, steps, coords, config.tensor_inputs; None for a rule without)."""

    states: torch.Tensor
    grads: torch.Tensor
    losses: torch.Tensor
    labels: list
    inputs: "torch.Tensor | None"


def record(rule: LearnedRule, task, seeds: Sequence[int], steps: int, coords: int = 256) -> Recording:
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
            scaled, column = flat_terms(raw, sizes, rule.config)
            run_grads.append(scaled[pick])
            if column is not None:
                run_inputs.append(column[pick])
            opt.step()
            flat = torch.cat([torch.cat([opt.state[p][n] for n in rule.config.state_names], dim=1) for p in params])
            run_states.append(flat[pick])
        states.append(torch.stack(run_states))
        grads.append(torch.stack(run_grads))
        losses.append(torch.tensor(run_losses))
        if run_inputs:
            inputs.append(torch.stack(run_inputs))
    return Recording(torch.stack(states), torch.stack(grads), torch.stack(losses), labels,
                     torch.stack(inputs) if inputs else None)


def inputs_by_group(rule: LearnedRule, inputs: "torch.Tensor | None", labels) -> dict:
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


def hold_inputs(rule: LearnedRule, inputs: "torch.Tensor | None") -> dict:
    """Set a rule's per-tensor inputs (``LearnedRule.tensor_rms_ratio``, ``tensor_count``) to the medians of the
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


def schedule_by_group(rule: LearnedRule, by_group: dict, held: dict, steps: int, g_median: float) -> dict:
    """For a rule with per-tensor inputs: per parameter group, the step size for a gradient of median size along the
    autonomous trajectory with the inputs at that group's recorded medians (what the inputs do to each layer's steps:
    the gradients the rule sees are normalized per tensor, so these are the only per-layer signal it has). The rule's
    inputs are left at ``held``. Empty for a rule without such inputs."""
    found = {}
    for group, values in by_group.items():
        for name, value in values.items():
            setattr(rule, name, value)
        trajectory = autonomous(rule, max(steps, 200))
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
    both = update_function(rule, h, torch.tensor([g, -g], dtype=h.dtype))
    return float(-(both[0] - both[1]) / (2 * g))
