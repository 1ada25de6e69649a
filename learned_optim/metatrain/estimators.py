"""Meta-gradient estimators: truncated backpropagation through time (the paper's), antithetic evolution strategies over
whole runs, and persistent evolution strategies over truncations of long runs.

All end a meta-update through ``meta_step``: the mean of the problems' (or pairs') estimates, summed across
ranks in a distributed run, checked for finiteness, clipped, then one step of the meta-optimizer.

Persistent evolution strategies (PES; Vicol, Metz and Sohl-Dickstein, 2021). Each problem runs as ``es_pairs``
antithetic pairs of optimizees: in every truncation of ``unroll`` steps, pair i steps with the rule at φ + ε_i and
φ − ε_i (ε_i ~ N(0, σ²I), drawn afresh per truncation), and keeps the sum ξ_i of the ε_i it has used since its run
began. Then

    ĝ = Σ_i ξ_i (L_i⁺ − L_i⁻) / (2σ² · pairs),      L_i^± = Σ over the truncation's steps of the meta-loss,

is an unbiased estimate of the gradient of the whole run's (smoothed) meta-loss with respect to φ, however long the
run, where a truncated estimate is biased toward what helps within one truncation (short-horizon bias). The
optimizees, the rule's states and the ξ_i persist across truncations; a pair whose optimizee diverges is dropped for
the rest of its run.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .. import nets
from ..tasks import Problem
from .config import LOG_FLOOR, MetaTrainConfig, run_length
from .group import Group
from .rollout import Optimizee, forward_stepper, rule_step, run_meta_loss


def train_run(
    theta: dict[str, torch.Tensor],
    meta_opt: torch.optim.Optimizer,
    problem: Problem,
    config: MetaTrainConfig,
    impl: str = "fast",
) -> dict[str, float]:
    """One optimizee run with a meta-update after every unroll; returns its statistics."""
    stats = train_runs(theta, meta_opt, [problem], config, impl)
    return {"meta_loss": stats["meta_loss_sum"] / max(1, stats["meta_loss_count"]), "skipped_unrolls": stats["skipped_unrolls"]}


def train_runs(
    theta: dict[str, torch.Tensor],
    meta_opt: torch.optim.Optimizer,
    problems: Sequence[Problem],
    config: MetaTrainConfig,
    impl: str = "fast",
    group: "Group | None" = None,
) -> dict[str, float]:
    """Runs on several problems in lockstep, one meta-update per unroll from their averaged meta-gradients.

    In a distributed run each rank passes its share of the step's problems and
    ``group`` sums the meta-gradients across ranks before the update, so every rank
    takes the same step. A problem whose optimizee diverges stops contributing; an
    unroll to which no problem contributed makes no update.
    """
    device = torch.device(config.device)
    net = config.net
    optimizees = [Optimizee(problem, device) for problem in problems]
    states = [nets.init_state(net, o.numel, device=device) for o in optimizees]
    current = [o.loss_and_grad(0)[1] for o in optimizees]
    alive = [True] * len(optimizees)
    params = list(theta.values())
    meta_loss_sum, meta_loss_count, skipped = 0.0, 0, 0
    for start in range(0, config.steps, config.unroll):
        length = min(config.unroll, config.steps - start)
        meta_opt.zero_grad(set_to_none=True)
        contributed = 0
        for b, optimizee in enumerate(optimizees):
            if not alive[b]:
                continue
            grad, state = current[b], states[b]
            updates, later_grads, unroll_loss = [], [], 0.0
            for k in range(length):
                update, state = rule_step(theta, grad, state, net, impl, optimizee.sizes, start + k + 1)
                optimizee.apply(update)
                loss, grad = optimizee.loss_and_grad(start + k + 1)
                updates.append(update)
                value = float(loss)  # one device sync per step, as before
                if config.meta_loss == "log":  # d log f / dθ = g / f (a NaN stays NaN and an inf inf: the run is skipped)
                    value = max(value, LOG_FLOOR)
                    later_grads.append(grad / value)
                    unroll_loss += math.log(value)
                else:
                    later_grads.append(grad)
                    unroll_loss += value
            if not math.isfinite(unroll_loss):
                skipped += 1
                alive[b] = False  # the optimizee diverged: no meta-update from this run's remainder
                continue
            # G_j = sum of the gradients after update j (the meta-gradient's output weights)
            weights = torch.stack(later_grads).flip(0).cumsum(0).flip(0)
            torch.autograd.backward(updates, list(weights.unbind(0)))  # accumulates over the problems
            current[b], states[b] = grad, tuple(s.detach() for s in state)
            meta_loss_sum += unroll_loss
            meta_loss_count += 1
            contributed += 1
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        if meta_step(params, grads, contributed, meta_opt, config, group) is False:
            skipped += 1
    return {"meta_loss_sum": meta_loss_sum, "meta_loss_count": meta_loss_count, "skipped_unrolls": skipped}


def meta_step(params, grads, contributed: int, meta_opt, config: MetaTrainConfig, group: "Group | None") -> bool | None:
    """One meta-update from ``grads``, the sum of ``contributed`` problems' (or pairs') meta-gradients (in a
    distributed run, this rank's: summed over the ranks first): their mean, clipped, to ``meta_opt``. None where no
    problem contributed, False where the mean is not finite (no update), True after the update."""
    if group is not None:
        contributed = group.sum_(grads, contributed)
    if contributed == 0:
        return None
    if contributed > 1:  # the mean over the problems (a single problem's gradient stays bit for bit as it is)
        for g in grads:
            g.div_(contributed)
    if not all(torch.isfinite(g).all() for g in grads):
        return False
    for p, g in zip(params, grads):
        p.grad = g
    if config.meta_grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, config.meta_grad_clip)
    meta_opt.step()
    return True



def es_gradient(
    theta: dict[str, torch.Tensor], problem: Problem, config: MetaTrainConfig, impl: str = "fast", seed: int = 0,
    scores: list | None = None,
) -> tuple[list[torch.Tensor], dict[str, float]]:
    """Antithetic evolution strategies on one problem: Σ_k (L(φ+σε_k) − L(φ−σε_k)) ε_k / (2σ), summed over the
    ``es_pairs`` pairs whose two runs both stayed finite (divide by the count for the estimate), and the statistics.

    The directions ε_k come from ``seed`` alone, so that a resumed or distributed run draws the same ones. Both runs
    of a pair see the same problem and batches: the problem's own noise cancels out of their difference. ``scores``,
    if given, receives each pair's (L(φ+σε), L(φ−σε)), diverged pairs included.
    """
    base = [v.detach() for v in theta.values()]
    generator = torch.Generator().manual_seed(seed)
    total = [torch.zeros_like(v) for v in base]
    loss_sum, pairs, skipped = 0.0, 0, 0
    for _ in range(config.es_pairs):
        eps = [torch.randn(v.shape, generator=generator, dtype=v.dtype).to(v.device) for v in base]
        plus, minus = ({k: v + sign * config.es_sigma * e for k, v, e in zip(theta, base, eps)} for sign in (1, -1))
        high, low = run_meta_loss(plus, problem, config, impl), run_meta_loss(minus, problem, config, impl)
        if scores is not None:
            scores.append((high, low))
        if not (math.isfinite(high) and math.isfinite(low)):
            skipped += 1  # a diverged run scores no difference: the pair is dropped
            continue
        for t, e in zip(total, eps):
            t.add_(e, alpha=(high - low) / (2 * config.es_sigma))
        loss_sum += (high + low) / 2
        pairs += 1
    return total, {"meta_loss_sum": loss_sum, "meta_loss_count": pairs, "skipped_unrolls": skipped}


def es_runs(
    theta: dict[str, torch.Tensor],
    meta_opt: torch.optim.Optimizer,
    problems: Sequence[Problem],
    seeds: Sequence[int],
    config: MetaTrainConfig,
    impl: str = "fast",
    group: "Group | None" = None,
) -> dict[str, float]:
    """One meta-update from the ES estimates of several problems (``seeds`` draws each one's directions), averaged
    over every finite pair; in a distributed run over the ranks' pairs too. No finite pair: no update."""
    params = list(theta.values())
    sums = [torch.zeros_like(p) for p in params]
    stats = {"meta_loss_sum": 0.0, "meta_loss_count": 0, "skipped_unrolls": 0}
    for problem, seed in zip(problems, seeds):
        grads, one = es_gradient(theta, problem, config, impl, seed)
        for total, g in zip(sums, grads):
            total.add_(g)
        stats = {k: stats[k] + one[k] for k in stats}
    if meta_step(params, sums, stats["meta_loss_count"], meta_opt, config, group) is False:
        stats["skipped_unrolls"] += 1  # as truncated backpropagation counts a non-finite mean
    return stats


def runs_per_problem(config: MetaTrainConfig) -> int:
    """Optimizee runs a training problem costs: one, or two per ES pair."""
    return 2 * config.es_pairs if config.meta_grad in ("es", "pes") else 1


def unrolls_per_problem(config: MetaTrainConfig) -> int:
    """Meta-gradient pieces a training problem gives, each of which a divergence may skip: its truncations, or its
    ES pairs."""
    if config.meta_grad == "pes":  # a pair is dropped at most once per run
        return config.es_pairs
    return config.es_pairs if config.meta_grad == "es" else -(-config.steps // config.unroll)


def _meta_loss_of(loss: float, config: MetaTrainConfig) -> float:
    return math.log(max(loss, LOG_FLOOR)) if config.meta_loss == "log" else loss


def pes_runs(
    theta: dict[str, torch.Tensor],
    meta_opt: torch.optim.Optimizer,
    problems: Sequence[Problem],
    seeds: Sequence[int],
    config: MetaTrainConfig,
    impl: str = "fast",
    group: "Group | None" = None,
) -> dict[str, float]:
    """Whole runs of the problems (each of ``run_length`` steps) in truncations of ``unroll`` steps, one PES
    meta-update after each (see the module docstring); the problems' seeds draw their lengths and perturbations."""
    device = torch.device(config.device)
    net, sigma, pairs = config.net, config.es_sigma, config.es_pairs
    names = list(theta)
    lengths = [run_length(config, seed) for seed in seeds]
    generators = [torch.Generator().manual_seed(seed * 104729 + 17) for seed in seeds]
    # per problem, per pair, per sign: an optimizee, the rule's state and its current gradient; the pair's xi
    runs = []
    for problem in problems:
        particles = []
        for _ in range(pairs):
            pair = []
            for _sign in (1, -1):
                optimizee = Optimizee(problem, device)
                pair.append({"opt": optimizee, "state": nets.init_state(net, optimizee.numel, device=device),
                             "grad": optimizee.loss_and_grad(0)[1]})
            particles.append({"pair": pair, "xi": [torch.zeros_like(v) for v in theta.values()], "alive": True})
        runs.append(particles)
    params = list(theta.values())
    stats = {"meta_loss_sum": 0.0, "meta_loss_count": 0, "skipped_unrolls": 0}
    for start in range(0, max(lengths), config.unroll):
        base = [v.detach() for v in theta.values()]
        sums = [torch.zeros_like(v) for v in base]
        contributed = 0
        for b, particles in enumerate(runs):
            if start >= lengths[b]:
                continue
            length = min(config.unroll, lengths[b] - start)
            for particle in particles:
                # drawn for a dropped pair too, so that the other pairs' directions do not depend on which died
                eps = [torch.randn(v.shape, generator=generators[b], dtype=v.dtype).to(v.device) * sigma for v in base]
                if not particle["alive"]:
                    continue
                for x, e in zip(particle["xi"], eps):
                    x.add_(e)
                scores = []
                with torch.no_grad():
                    for sign, run in zip((1, -1), particle["pair"]):
                        step = forward_stepper({k: v + sign * e for k, v, e in zip(names, base, eps)}, net, device,
                                               impl)
                        total = 0.0
                        for k in range(length):
                            update, run["state"] = step(run["grad"], run["state"], run["opt"].sizes, start + k + 1)
                            run["opt"].apply(update)
                            loss, run["grad"] = run["opt"].loss_and_grad(start + k + 1)
                            total += _meta_loss_of(float(loss), config)
                        scores.append(total)
                if not all(math.isfinite(s) for s in scores):
                    particle["alive"] = False
                    stats["skipped_unrolls"] += 1
                    continue
                weight = (scores[0] - scores[1]) / (2 * sigma * sigma)
                for total, x in zip(sums, particle["xi"]):
                    total.add_(x, alpha=weight)
                stats["meta_loss_sum"] += (scores[0] + scores[1]) / (2 * length)
                stats["meta_loss_count"] += 1
                contributed += 1
        if meta_step(params, sums, contributed, meta_opt, config, group) is False:
            stats["skipped_unrolls"] += 1
    return stats
