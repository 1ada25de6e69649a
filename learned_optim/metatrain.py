"""Meta-train an update rule: ``python -m learned_optim.metatrain --task mnist_mlp --out runs/mine.safetensors``.

Truncated backpropagation through time, as in Andrychowicz et al. (2016):
optimizee runs of ``steps`` steps, unrolled ``unroll`` steps at a time; the
meta-loss of an unroll is the sum of the optimizee's losses after each of its
updates (every weight w_t = 1; with ``meta_loss="log"`` the sum of their logarithms,
so that each problem counts by its relative progress rather than its loss's
scale: then G_j below sums g_t / f(θ_t)); the optimizee's gradients are treated as inputs
(no second derivatives); the rule's hidden state is carried across unrolls and
detached between them; the meta-optimizer is Adam.

Why one backward pass per unroll is enough: with the gradients g_t treated as
constants, θ_t = θ_s + Σ_{j<t} Δ_j(φ) and ∂f(θ_t)/∂θ_t = g_t, so

    d/dφ Σ_{t=s+1}^{s+K} f(θ_t) = Σ_{j=s}^{s+K-1} G_jᵀ ∂Δ_j/∂φ,   G_j = Σ_{t=j+1}^{s+K} g_t.

Each step's optimizee gradient needs only that step's graph, and the
meta-gradient is one backward through the K rule steps with output weights G_j.

Each epoch runs ``runs_per_epoch`` training problems (fresh seeds), then
validates on ``val_problems`` held-out problem seeds (mean sum of losses over a
run, the reproductions' metric); the best epoch's weights are kept (``--keep last``:
the last epoch's). A checkpoint
is written atomically after every epoch; ``--resume`` continues a killed run
from its last complete epoch and ends with the same weights as an
uninterrupted run. Output: a weight file with its card (see pretrained.py).

``meta_grad="es"`` replaces backpropagation by antithetic evolution strategies over
whole runs (``unroll`` must equal ``steps``): for each training problem, ``es_pairs``
Gaussian directions ε, each scored by two runs of the rule at φ ± σε on that same
problem, give the estimate Σ (L(φ+σε) − L(φ−σε)) ε / (2σ · pairs) of the gradient
of the meta-loss averaged over the perturbations, a smoothed objective. It needs
no derivatives at all (forward runs only, so every step may take the C++ kernel),
and it stays finite where a whole run's exact meta-gradient is chaotic; its cost
is 2 · es_pairs runs per problem, and its variance grows with the rule's size.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import json
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from . import __version__, nets
from .features import (grad_noise_value, normalize_per_tensor, relative_step_column, rule_inputs, tensor_input_columns,
                       tensor_rms, update_grad_ema)
from .nets import NetConfig
from .pretrained import (RuleWeights, atomic_write, card_path, header_metadata, load_weights,
                         remove_stale_temporaries, save_weights)
from .tasks import TRAIN_SEED_START, VALIDATION_SEEDS, Problem, Task, make_task

CHECKPOINT_FORMAT = "learned_optim.checkpoint/1"
KERNELS = ("auto", "cpp", "python")


BIAS_INITS = ("uniform", "zero")
META_LOSSES = ("sum", "log")
KEEPS = ("best", "last")  # which epoch's weights a run writes
META_GRADS = ("tbptt", "es")  # truncated backpropagation (the paper's), or antithetic evolution strategies
LOG_FLOOR = 1e-8  # meta_loss="log": a loss is read as at least this (a loss of 0 would weigh without bound)


def initial_theta(
    config: "MetaTrainConfig", device: torch.device | str = "cpu", source: "RuleWeights | None" = None
) -> dict[str, torch.Tensor]:
    """The rule's weights before meta-training: those of ``init_from`` where it names a weight file (``source``, if
    the caller has loaded it already), else nets.init_theta from the recipe's seed, biases per ``bias_init``."""
    if config.init_from:
        source = source if source is not None else start_weights(config)
        return {k: v.detach().to(device=device, dtype=torch.float32).clone() for k, v in source.theta.items()}
    theta = nets.init_theta(config.net, torch.Generator().manual_seed(config.seed), device=device)
    if config.bias_init == "zero":
        for name, value in theta.items():
            if name.endswith((".b", ".b_ih", ".b_hh")):
                value.zero_()
    return theta


def start_weights(config: "MetaTrainConfig") -> "RuleWeights":
    """The weight file ``init_from`` names (a shipped name or a path), checked against the recipe's architecture.

    A recipe may add per-tensor inputs (``--tensor-rms-input``, ``--net-scale-input``, ``--tensor-count-input``,
    ``--grad-noise-input``)
    that the file's rule lacks:
    the rule is then widened, its first cell given a zero input weight for each added input, so that meta-training
    starts at exactly the file's update function (see ``widen``); or it may feed the rule's per-tensor inputs at
    another ``--tensor-input-scale``, and ``widen`` rescales their weights to the same end. The
    returned weights keep the file's name and sha256 (the card names the bytes read)."""
    rule = load_weights(config.init_from)
    if _adds_tensor_inputs(rule.config, config.net):
        rule = dataclasses.replace(rule, config=config.net, theta=widen(rule.theta, rule.config, config.net))
    if rule.config != config.net:
        ours, theirs = dataclasses.asdict(config.net), dataclasses.asdict(rule.config)  # every field, defaults too
        differ = sorted(k for k, v in ours.items() if theirs[k] != v)
        raise ValueError(
            f"Invalid init_from: {config.init_from!r} has another architecture than the recipe's "
            f"(differs in {', '.join(differ)}); give the same network flags as its card"
        )
    return rule


RESUMABLE_CHANGES = ("epochs", "keep")  # recipe fields a resumed run may change: how long it runs, what it writes


def _adds_tensor_inputs(source: NetConfig, target: NetConfig) -> bool:
    """Whether ``target`` is ``source`` with per-tensor inputs switched on and / or fed at another
    ``tensor_input_scale`` (and the count input's range set), nothing else changed (and differing at all)."""
    plain = {**{name: False for name in nets.TENSOR_INPUTS}, "tensor_input_scale": 0.0, "tensor_count_min": 1,
             "tensor_count_max": 0}
    return (source != target and dataclasses.replace(source, **plain) == dataclasses.replace(target, **plain)
            and all(getattr(target, name) for name in nets.TENSOR_INPUTS if getattr(source, name)))


def widen(theta: dict[str, torch.Tensor], source: NetConfig, target: NetConfig) -> dict[str, torch.Tensor]:
    """``theta`` of a rule with ``source``'s per-tensor inputs, as the same update function with ``target``'s:
    inputs that ``target`` adds get an all-zero column of the first cell's input weights (multiplied by zero, they
    change nothing), and the inputs both have are rescaled from ``source``'s tensor_input_scale to ``target``'s (each
    is the log ratio / the config's divisor, so its weights are multiplied by target divisor / source divisor; the
    tensor count is not a ratio and keeps its weights). The
    per-tensor inputs follow the gradient features, in ``nets.TENSOR_INPUTS`` order (features.py)."""
    if not _adds_tensor_inputs(source, target):
        raise ValueError("widen: the target must be the source with per-tensor inputs added or rescaled, nothing "
                         "else changed")
    w = theta["cells.0.w_ih"]
    base, factor = w.shape[1] - source.tensor_inputs, target.tensor_input_divisor / source.tensor_input_divisor
    columns, taken = [w[:, :base]], base
    for name in nets.TENSOR_INPUTS:
        if getattr(source, name):
            columns.append(w[:, taken: taken + 1] * (factor if name in nets.SCALED_TENSOR_INPUTS else 1.0))
            taken += 1
        elif getattr(target, name):
            columns.append(torch.zeros_like(w[:, :1]))
    return {**theta, "cells.0.w_ih": torch.cat(columns, dim=1)}


@dataclass(frozen=True)
class MetaTrainConfig:
    """The whole meta-training recipe; the card records it, ``--resume`` checks it."""

    task: str = "mnist_mlp"  # task name (see learned_optim.tasks.TASKS)
    task_options: dict[str, Any] = field(default_factory=dict)  # the task's config options
    net: NetConfig = NetConfig()  # architecture of the rule
    epochs: int = 50  # epochs of (training runs + validation)
    runs_per_epoch: int = 20  # optimizee runs per epoch, each from a fresh problem seed
    steps: int = 100  # optimizee steps per run
    unroll: int = 20  # truncation length: steps per meta-gradient
    meta_lr: float = 0.003  # Adam learning rate on the rule's weights
    meta_grad_clip: float = 0.0  # clip the meta-gradient's global norm to this (0: off)
    val_problems: int = 10  # held-out problems validated after each epoch
    seed: int = 0  # seeds the rule's init and the training problems
    device: str = "cpu"  # where the rule and the optimizees run
    kernel: str = "auto"  # LSTM cell: "cpp" (C++ element-wise kernel), "python", or "auto" (cpp where it builds)
    problems_per_step: int = 1  # problems run in lockstep, their meta-gradients averaged per update (split across ranks)
    divergence_factor: float = 3.0  # an epoch validating above this × the best so far has diverged (0: off)
    divergence_lr_factor: float = 0.5  # after a divergence: restore the last good state, meta-lr × this
    max_lr_reductions: int = 5  # divergences tolerated before the run stops and keeps its best epoch
    # "uniform" (torch.nn's init for every weight) or "zero": biases start at 0, so that with preprocess "none" the
    # untrained rule maps g = 0 to a zero update and state instead of moving every coordinate by the same step
    bias_init: str = "uniform"
    # "sum": Σ_t f(θ_t) per unroll (the paper's); "log": Σ_t log f(θ_t), each problem weighted by its relative progress
    # (needs losses > 0, as cross-entropy and squared error are; one at or below LOG_FLOOR is read as LOG_FLOOR)
    meta_loss: str = "sum"
    # a weight file (shipped name or path) whose tensors start the run instead of a fresh init: fine-tuning,
    # or a curriculum of two runs; its architecture must be the recipe's, and the card records its sha256
    init_from: str = ""
    # which epoch's weights go to ``out``: "best" (the best validation's) or "last" (the last epoch's, a fine-tune's
    # end where validation on its own family is not the measure; after a divergence stop, the last good state)
    keep: str = "best"
    # the meta-gradient estimator: "tbptt" (first-order truncated backpropagation, above) or "es" (antithetic
    # evolution strategies over whole runs: es_pairs perturbation pairs of standard deviation es_sigma per problem)
    meta_grad: str = "tbptt"
    es_pairs: int = 8
    es_sigma: float = 1e-3

    def __post_init__(self) -> None:
        for name in ("epochs", "runs_per_epoch", "steps", "unroll", "val_problems", "problems_per_step", "max_lr_reductions",
                     "es_pairs"):
            value = getattr(self, name)
            low = 0 if name in ("epochs", "max_lr_reductions") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"Invalid {name}: {value!r} (must be an int >= {low})")
        if not (isinstance(self.meta_lr, (int, float)) and math.isfinite(self.meta_lr) and self.meta_lr > 0):
            raise ValueError(f"Invalid meta_lr: {self.meta_lr!r} (must be a finite number > 0)")
        if not (isinstance(self.meta_grad_clip, (int, float)) and self.meta_grad_clip >= 0):
            raise ValueError(f"Invalid meta_grad_clip: {self.meta_grad_clip!r} (must be >= 0)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"Invalid seed: {self.seed!r} (must be an int >= 0)")
        if self.runs_per_epoch % self.problems_per_step:
            raise ValueError(
                f"Invalid problems_per_step: {self.problems_per_step} (must divide runs_per_epoch, {self.runs_per_epoch})"
            )
        if not (isinstance(self.divergence_factor, (int, float)) and (self.divergence_factor == 0 or self.divergence_factor > 1)):
            raise ValueError(f"Invalid divergence_factor: {self.divergence_factor!r} (0 to turn off, else > 1)")
        if not (isinstance(self.divergence_lr_factor, (int, float)) and 0 < self.divergence_lr_factor < 1):
            raise ValueError(f"Invalid divergence_lr_factor: {self.divergence_lr_factor!r} (must be in (0, 1))")
        if self.bias_init not in BIAS_INITS:
            raise ValueError(f"Invalid bias_init: {self.bias_init!r} (allowed: {', '.join(BIAS_INITS)})")
        if self.meta_loss not in META_LOSSES:
            raise ValueError(f"Invalid meta_loss: {self.meta_loss!r} (allowed: {', '.join(META_LOSSES)})")
        if not isinstance(self.init_from, str):
            raise ValueError(f"Invalid init_from: {self.init_from!r} (a weight file's name or path, or '' for none)")
        if self.kernel not in KERNELS:
            raise ValueError(f"Invalid kernel: {self.kernel!r} (allowed: {', '.join(KERNELS)})")
        if self.keep not in KEEPS:
            raise ValueError(f"Invalid keep: {self.keep!r} (allowed: {', '.join(KEEPS)})")
        if self.meta_grad not in META_GRADS:
            raise ValueError(f"Invalid meta_grad: {self.meta_grad!r} (allowed: {', '.join(META_GRADS)})")
        if not (isinstance(self.es_sigma, (int, float)) and not isinstance(self.es_sigma, bool)
                and math.isfinite(self.es_sigma) and self.es_sigma > 0):
            raise ValueError(f"Invalid es_sigma: {self.es_sigma!r} (must be a finite number > 0)")
        if self.meta_grad == "es" and self.unroll != self.steps:
            raise ValueError(f"Invalid unroll: {self.unroll} (meta_grad 'es' scores whole runs: unroll must equal "
                             f"steps, {self.steps})")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["net"] = self.net.to_dict()
        if self.keep == "best":  # cards written before the field existed kept the best epoch
            del out["keep"]
        if self.meta_grad == "tbptt":  # nor do they name an estimator: theirs was truncated backpropagation
            for name in ("meta_grad", "es_pairs", "es_sigma"):
                del out[name]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MetaTrainConfig":
        data = dict(data)
        data["net"] = NetConfig.from_dict(data["net"])
        return cls(**data)


def train_seed(config: MetaTrainConfig, epoch: int, run: int) -> int:
    """The problem seed of a training run: disjoint from every evaluation and validation seed."""
    return TRAIN_SEED_START + (config.seed * 100_000 + epoch) * config.runs_per_epoch + run


# -- one optimizee run ----------------------------------------------------------------


class _Optimizee:
    """A problem's parameters as flat float32 tensors, driven through functional_call."""

    def __init__(self, problem: Problem, device: torch.device) -> None:
        self.problem = problem
        named = list(problem.model.named_parameters())
        self.names = [name for name, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.params = [p.detach().to(device=device, dtype=torch.float32).clone() for _, p in named]
        self.grad_ema, self.ema_updates = None, 0  # a grad_noise_input rule's EMA of the gradient (flat)

    @property
    def numel(self) -> int:
        return sum(self.sizes)

    def loss_and_grad(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, flat gradient) at the current parameters, on step ``step``'s batch."""
        leaves = [p.detach().requires_grad_(True) for p in self.params]
        with torch.enable_grad():
            loss = self.problem.loss(step, dict(zip(self.names, leaves)))
            grads = torch.autograd.grad(loss, leaves)
        return loss.detach(), torch.cat([g.reshape(-1) for g in grads])

    def noise_inputs(self, grad: torch.Tensor, net: NetConfig) -> "list | None":
        """For a rule with grad_noise_input: the EMA of the gradient updated with this step's flat ``grad`` (as
        LearnedOptimizer keeps it per parameter), and each tensor's noise value; None for another rule."""
        if not net.grad_noise_input:
            return None
        if self.grad_ema is None:
            self.grad_ema = torch.zeros_like(grad, dtype=torch.float32)
        update_grad_ema(self.grad_ema, grad.detach())
        self.ema_updates += 1
        return [grad_noise_value(tensor_rms(e)[0], self.ema_updates, tensor_rms(g)[0])
                for e, g in zip(self.grad_ema.split(self.sizes), grad.detach().split(self.sizes))]

    def apply(self, update: torch.Tensor) -> None:
        pieces = update.detach().split(self.sizes)
        self.params = [p + u.view(shape) for p, u, shape in zip(self.params, pieces, self.shapes)]


def _rule_step(theta, grad: torch.Tensor, state: nets.State, net: NetConfig, impl: str = "fast", sizes=None,
               params=None, noise=None):
    """The rule on an optimizee's flat gradient (its tensors of ``sizes`` entries), as LearnedOptimizer applies it;
    ``params``: the optimizee's tensors, which a rule with ``relative_step`` scales each tensor's update by;
    ``noise``: the tensors' grad_noise_input values (``_Optimizee.noise_inputs``) for a rule with that input."""
    column = tensor_input_columns(grad, sizes, net, noise)
    grad_factor = relative_step_column(grad.split(sizes), net.grad_relative_step) if net.grad_relative_step else None
    if net.grad_norm == "tensor":
        grad = normalize_per_tensor(grad, sizes, net.grad_norm_target, net.grad_norm_power)
    update, state = nets.step(theta, rule_inputs(grad, net, column), state, net, impl=impl)
    if net.relative_step:
        # a constant of the meta-gradient, as the gradient is: the optimizee's second derivatives are dropped
        update = update * relative_step_column(params, net.relative_step).to(update.dtype)
    if grad_factor is not None:
        update = update * grad_factor.to(update.dtype)
    return update, state


def cell_impl(kernel: str) -> str:
    """The nets.step implementation a --kernel choice comes to on this machine."""
    if kernel == "python":
        return "fast"
    from .kernels import build_error, cpp_available

    if cpp_available():
        return "cpp"
    if kernel == "cpp":
        raise ValueError(f"Invalid kernel: 'cpp' cannot be built here ({build_error()}); use --kernel auto or python")
    return "fast"


@torch.no_grad()
def rollout(
    theta: dict[str, torch.Tensor], net: NetConfig, problem: Problem, steps: int, device="cpu", impl: str = "fast"
) -> torch.Tensor:
    """Losses f(θ_0), ..., f(θ_{steps-1}) of one run of the rule (no meta-gradient)."""
    device = torch.device(device)
    optimizee = _Optimizee(problem, device)
    state = nets.init_state(net, optimizee.numel, device=device)
    losses = torch.empty(steps)
    for t in range(steps):
        loss, grad = optimizee.loss_and_grad(t)
        losses[t] = loss
        if not torch.isfinite(loss):
            losses[t:] = float("inf")
            break
        update, state = _rule_step(theta, grad, state, net, impl, optimizee.sizes, optimizee.params,
                                   optimizee.noise_inputs(grad, net))
        optimizee.apply(update)
    return losses


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
    group: "_Group | None" = None,
) -> dict[str, float]:
    """Runs on several problems in lockstep, one meta-update per unroll from their averaged meta-gradients.

    In a distributed run each rank passes its share of the step's problems and
    ``group`` sums the meta-gradients across ranks before the update, so every rank
    takes the same step. A problem whose optimizee diverges stops contributing; an
    unroll to which no problem contributed makes no update.
    """
    device = torch.device(config.device)
    net = config.net
    optimizees = [_Optimizee(problem, device) for problem in problems]
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
                update, state = _rule_step(theta, grad, state, net, impl, optimizee.sizes, optimizee.params,
                                           optimizee.noise_inputs(grad, net))
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
        if _meta_step(params, grads, contributed, meta_opt, config, group) is False:
            skipped += 1
    return {"meta_loss_sum": meta_loss_sum, "meta_loss_count": meta_loss_count, "skipped_unrolls": skipped}


def _meta_step(params, grads, contributed: int, meta_opt, config: MetaTrainConfig, group: "_Group | None") -> bool | None:
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


def run_meta_loss(theta: dict[str, torch.Tensor], problem: Problem, config: MetaTrainConfig, impl: str = "fast") -> float:
    """One whole run's meta-loss, as truncated backpropagation's unrolls add it up: Σ f(θ_t) over the losses after
    each of the ``steps`` updates (Σ log f(θ_t) under meta_loss="log"); inf if the optimizee diverged."""
    losses = rollout(theta, config.net, problem, config.steps + 1, config.device, impl)[1:].double()
    if config.meta_loss == "log":
        losses = losses.clamp_min(LOG_FLOOR).log()
    return float(losses.sum())


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
    group: "_Group | None" = None,
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
    if _meta_step(params, sums, stats["meta_loss_count"], meta_opt, config, group) is False:
        stats["skipped_unrolls"] += 1  # as truncated backpropagation counts a non-finite mean
    return stats


def _runs_per_problem(config: MetaTrainConfig) -> int:
    """Optimizee runs a training problem costs: one, or two per ES pair."""
    return 2 * config.es_pairs if config.meta_grad == "es" else 1


def _unrolls_per_problem(config: MetaTrainConfig) -> int:
    """Meta-gradient pieces a training problem gives, each of which a divergence may skip: its truncations, or its
    ES pairs."""
    return config.es_pairs if config.meta_grad == "es" else -(-config.steps // config.unroll)


class _Group:
    """This process's place in a distributed meta-training run (torch.distributed, initialized by the caller)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def sum_(self, tensors: list[torch.Tensor], count: int) -> int:
        """Sum the tensors across ranks in place; returns the count summed across ranks."""
        flat = torch.cat([t.reshape(-1) for t in tensors] + [torch.tensor([float(count)], device=tensors[0].device)])
        self.dist.all_reduce(flat)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()
        return int(round(float(flat[-1])))

    def sum_floats(self, values: list[float], device) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        self.dist.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        self.dist.barrier()


def _process_group() -> "_Group | None":
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return _Group()
    return None


def validate(theta, config: MetaTrainConfig, task: Task, impl: str = "fast", group: "_Group | None" = None) -> float:
    """Mean over held-out problems of the sum of losses over a run (lower is better)."""
    detached = {k: v.detach() for k, v in theta.items()}
    seeds = list(VALIDATION_SEEDS[: config.val_problems])
    if group is not None:
        seeds = seeds[group.rank :: group.world]
    total = 0.0
    for seed in seeds:
        problem = task.sample(seed, config.device)
        total += float(rollout(detached, config.net, problem, config.steps, config.device, impl).sum())
    if group is not None:
        (total,) = group.sum_floats([total], config.device)
    return total / config.val_problems


# -- checkpoints ------------------------------------------------------------------------


def checkpoint_path(out: Path) -> Path:
    stem = out.name[: -len(".safetensors")] if out.name.endswith(".safetensors") else out.name
    return out.with_name(stem + ".ckpt.safetensors")


def log_path(out: Path) -> Path:
    stem = out.name[: -len(".safetensors")] if out.name.endswith(".safetensors") else out.name
    return out.with_name(stem + ".log.jsonl")


def save_checkpoint(path: Path, progress: dict[str, Any], theta, best_theta, meta_opt) -> None:
    """Everything a resumed run needs, in one safetensors file (tensors + JSON metadata)."""
    tensors = {f"theta.{k}": v.detach().cpu().contiguous() for k, v in theta.items()}
    tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best_theta.items()})
    opt_state = meta_opt.state_dict()
    plain_state: dict[str, dict[str, Any]] = {}
    for index, values in opt_state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"meta_opt.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain_state.setdefault(str(index), {})[key] = value
    meta = {
        "format": CHECKPOINT_FORMAT,
        "progress": json.dumps(progress),
        "meta_opt_groups": json.dumps(opt_state["param_groups"]),
        "meta_opt_plain": json.dumps(plain_state),
    }
    atomic_write(path, save_safetensors_bytes(tensors, metadata=meta))


def load_checkpoint(path: Path) -> tuple[dict[str, Any], dict, dict, dict]:
    """(progress, theta, best_theta, meta-optimizer state dict) from a checkpoint file."""
    data = path.read_bytes()
    try:
        tensors = load_safetensors_bytes(data)
        meta = header_metadata(data, path)
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        progress = json.loads(meta["progress"])
        groups = json.loads(meta["meta_opt_groups"])
        plain = json.loads(meta["meta_opt_plain"])
    except Exception as exc:
        raise ValueError(f"Checkpoint {path} is unreadable ({exc}); delete it to start over") from None
    theta = {k[len("theta.") :]: v for k, v in tensors.items() if k.startswith("theta.")}
    best = {k[len("best.") :]: v for k, v in tensors.items() if k.startswith("best.")}
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("meta_opt."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in plain.items():
        state.setdefault(int(index), {}).update(values)
    return progress, theta, best, {"state": state, "param_groups": groups}


# -- the loop -----------------------------------------------------------------------------


def _progress_bar(total: int, initial: int):
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="run", desc="meta-training", dynamic_ncols=True)


def metatrain(
    config: MetaTrainConfig,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    data_root: str | os.PathLike | None = None,
    command: str | None = None,
    name: str | None = None,
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
) -> Path:
    """Run the recipe and write the best epoch's weights to ``out`` (with its card)."""
    out = Path(out)
    if not out.name.endswith(".safetensors"):
        raise ValueError(f"Invalid out: {str(out)!r} (must end with .safetensors)")
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt, log_file = checkpoint_path(out), log_path(out)
    group = _process_group()
    world, lead = (group.world, group.rank == 0) if group is not None else (1, True)
    if config.problems_per_step % world:
        raise ValueError(
            f"Invalid problems_per_step: {config.problems_per_step} (must be a multiple of the {world} ranks)"
        )
    if not lead:
        log = lambda message: None  # noqa: E731 -- rank 0 speaks for the run
    device = torch.device(config.device)
    task = make_task(config.task, data_root=data_root, **config.task_options)
    impl = cell_impl(config.kernel) if device.type == "cpu" else "fast"  # the C++ kernel is CPU-only

    source = start_weights(config) if config.init_from else None  # read and hashed once: the card names these bytes
    theta = {
        k: v.requires_grad_(True)
        for k, v in initial_theta(config, device, source).items()
    }
    meta_opt = torch.optim.Adam(list(theta.values()), lr=config.meta_lr)
    progress: dict[str, Any] = {"config": config.to_dict(), "epochs_done": 0, "history": [], "train_seconds": 0.0}
    best_theta = {k: v.detach().clone() for k, v in theta.items()}

    if lead:  # a run killed while writing leaves its temporary file behind: the checkpoint's, the weights' or the card's
        remove_stale_temporaries(ckpt, out, card_path(out))
    if ckpt.exists() and not resume:
        raise FileExistsError(f"A checkpoint of an unfinished run exists at {ckpt}: pass --resume, or delete it")
    if ckpt.exists():
        saved, saved_theta, saved_best, opt_state = load_checkpoint(ckpt)
        mine = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_CHANGES}
        try:  # through the config class: a field added since the checkpoint was written takes its default
            theirs = {k: v for k, v in MetaTrainConfig.from_dict(saved["config"]).to_dict().items()
                      if k not in RESUMABLE_CHANGES}
        except (TypeError, ValueError):
            theirs = None
        if mine != theirs:
            raise ValueError(f"Checkpoint {ckpt} was written by another recipe; resume with the same flags")
        progress = saved
        progress["config"] = config.to_dict()
        with torch.no_grad():
            for k in theta:
                theta[k].copy_(saved_theta[k])
        best_theta = {k: v.to(device) for k, v in saved_best.items()}
        meta_opt.load_state_dict(opt_state)
        progress.setdefault("resumed_after_epochs", []).append(progress["epochs_done"])
        log(f"resuming from {ckpt} after epoch {progress['epochs_done']}")
    else:
        if log_file.exists() and lead:
            log_file.unlink()
        val = validate(theta, config, task, impl, group)  # epoch 0: the untrained rule
        progress["history"].append({"epoch": 0, "val": val})
        progress["best_epoch"], progress["best_val"] = 0, val
        log(f"epoch 0: validation {val:.4f} (untrained)")

    bar = _progress_bar(config.epochs * config.runs_per_epoch, progress["epochs_done"] * config.runs_per_epoch) if lead else None
    per_step, share = config.problems_per_step, config.problems_per_step // world
    rank = group.rank if group is not None else 0
    stopped = None
    while progress["epochs_done"] < config.epochs and stopped is None:
        epoch = progress["epochs_done"] + 1
        good = ({k: v.detach().clone() for k, v in theta.items()}, copy.deepcopy(meta_opt.state_dict()))
        started = time.perf_counter()
        totals = [0.0, 0.0, 0.0]  # meta-loss sum, unrolls counted, unrolls skipped
        for first in range(0, config.runs_per_epoch, per_step):
            mine = range(first + rank * share, first + (rank + 1) * share)  # this rank's share of the step's problems
            seeds = [train_seed(config, epoch, run) for run in mine]
            problems = [task.sample(seed, config.device) for seed in seeds]
            if config.meta_grad == "es":
                stats = es_runs(theta, meta_opt, problems, seeds, config, impl, group)
            else:
                stats = train_runs(theta, meta_opt, problems, config, impl, group)
            totals = [a + b for a, b in zip(totals, (stats["meta_loss_sum"], stats["meta_loss_count"], stats["skipped_unrolls"]))]
            if bar is not None:
                bar.update(per_step)
        if group is not None:
            totals = group.sum_floats(totals, config.device)
        train_seconds = time.perf_counter() - started
        val = validate(theta, config, task, impl, group)
        epoch_seconds = time.perf_counter() - started
        record = {
            "epoch": epoch,
            "train_meta_loss": totals[0] / max(1.0, totals[1]),
            "skipped_unrolls": int(totals[2]),
            "val": val,
            "train_seconds": round(train_seconds, 3),
            "epoch_seconds": round(epoch_seconds, 3),
            "optimizee_steps_per_s": round(config.runs_per_epoch * _runs_per_problem(config) * config.steps / train_seconds, 2),
        }
        progress["train_seconds"] += epoch_seconds
        diverged = _divergence(config, record, progress["best_val"], unrolls=config.runs_per_epoch * _unrolls_per_problem(config))
        if diverged is not None:
            reductions = progress.setdefault("lr_reductions", [])
            with torch.no_grad():  # back to the state before this epoch
                for k in theta:
                    theta[k].copy_(good[0][k])
            meta_opt.load_state_dict(good[1])
            record["diverged"] = diverged
            if len(reductions) >= config.max_lr_reductions:
                stopped = f"diverged at epoch {epoch} after {len(reductions)} meta-learning-rate reductions ({diverged})"
                progress["stopped"] = stopped
            else:
                new_lr = meta_opt.param_groups[0]["lr"] * config.divergence_lr_factor
                for param_group in meta_opt.param_groups:
                    param_group["lr"] = new_lr
                reductions.append({"epoch": epoch, "reason": diverged, "meta_lr": new_lr})
                log(f"epoch {epoch} diverged ({diverged}): restored the state before it, meta-lr now {new_lr:.3g}; redoing it")
        else:
            improved = val < progress["best_val"]
            if improved:
                best_theta = {k: v.detach().clone() for k, v in theta.items()}
                progress["best_epoch"], progress["best_val"] = epoch, val
            progress["epochs_done"] = epoch
        record["best_epoch"] = progress["best_epoch"]
        progress["history"].append(record)
        if lead:
            save_checkpoint(ckpt, progress, theta, best_theta, meta_opt)
            with open(log_file, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        if bar is not None:
            bar.set_postfix(val=f"{val:.3f}", best=f"{progress['best_val']:.3f}")
        elif diverged is None:
            log(
                f"epoch {epoch}: meta-loss {record['train_meta_loss']:.4f}, validation {val:.4f} "
                f"(best {progress['best_val']:.4f} at epoch {progress['best_epoch']}), {epoch_seconds:.1f} s"
            )
    if bar is not None:
        bar.close()
    if stopped is not None:
        log(f"stopped: {stopped}; keeping the best epoch")

    history = progress["history"]
    trained = [h for h in history if "train_seconds" in h and "diverged" not in h]
    card = {
        "name": name or out.name[: -len(".safetensors")],
        "description": f"Coordinatewise {config.net.cell.upper()} rule meta-trained on {config.task}",
        "task": task.describe(),
        "metatrain": config.to_dict(),
        "command": command,
        **({"init_from_sha256": source.sha256} if source is not None else {}),
        "validation": {
            "metric": f"mean over {config.val_problems} held-out problems of the sum of training losses over {config.steps} steps",
            "seeds": f"{VALIDATION_SEEDS.start}..{VALIDATION_SEEDS.start + config.val_problems - 1}",
            "best_epoch": progress["best_epoch"],
            "best": progress["best_val"],
            "history": history,
        },
        "throughput": {
            "optimizee_steps_per_s": (
                round(sum(config.runs_per_epoch * _runs_per_problem(config) * config.steps for _ in trained)
                      / sum(h["train_seconds"] for h in trained), 2)
                if trained
                else None
            ),
            "mean_epoch_seconds": round(sum(h["epoch_seconds"] for h in trained) / len(trained), 2) if trained else None,
        },
        "wall_time_s": round(progress["train_seconds"], 1),
        # a resumed run gives the weights of an uninterrupted one (tested); where it was interrupted is recorded
        "resumed_after_epochs": progress.get("resumed_after_epochs", []),
        # divergences met: each restored the state before its epoch and lowered the meta-learning rate
        "lr_reductions": progress.get("lr_reductions", []),
        "stopped": progress.get("stopped"),
        "ranks": world,
        "cell_implementation": {"cpp": "C++ element-wise kernel (kernels.py)", "fast": "nets.lstm_cell_fast"}[impl],
        "package_version": __version__,
        "torch_version": torch.__version__,
        "device": _device_name(device),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if group is not None:
        group.barrier()
    if not lead:
        return out
    best = f"best validation {progress['best_val']:.4f} at epoch {progress['best_epoch']}"
    if config.keep == "last":
        card["validation"]["kept_epoch"] = progress["epochs_done"]
        kept, which = {k: v.detach() for k, v in theta.items()}, f"last epoch {progress['epochs_done']}; {best}"
    else:
        kept, which = best_theta, best
    save_weights(out, kept, config.net, card)
    log(f"wrote {out} ({which})")
    return out


def _divergence(config: MetaTrainConfig, record: dict[str, Any], best: float, unrolls: int) -> str | None:
    """Why an epoch counts as diverged, or None: validation not finite, far above the best, or most unrolls (ES: pairs)
    skipped."""
    val = record["val"]
    if not math.isfinite(val):
        return "validation is not finite"
    if config.divergence_factor > 0 and val > config.divergence_factor * best:
        return f"validation {val:.4g} > {config.divergence_factor:g} x best {best:.4g}"
    if record["skipped_unrolls"] > unrolls / 2:
        return f"{record['skipped_unrolls']} of {unrolls} unrolls non-finite"
    return None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


# -- command line ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None
    return values


def add_tensor_count_range(parser) -> None:
    """``--tensor-count-range MIN MAX`` (NetConfig.tensor_count_min / max), for metatrain's and distill's parsers."""
    net = NetConfig()
    parser.add_argument("--tensor-count-range", type=int, nargs=2, metavar=("MIN", "MAX"),
                        default=(net.tensor_count_min, net.tensor_count_max),
                        help="the count input reads T clipped to [MIN, MAX] (MAX 0: no upper bound); set it to the "
                             "tensor counts the task distribution shows, so that a net outside them reads a value the "
                             "rule saw (default 1 0: unclipped)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m learned_optim.metatrain", description=__doc__.split("\n\n")[0])
    defaults, net_defaults = MetaTrainConfig(), NetConfig()
    parser.add_argument("--task", default=defaults.task, help="task to meta-train on: " + ", ".join(TASK_FLAGS))
    parser.add_argument("--out", required=True, help="weight file to write (NAME.safetensors; the card goes to NAME.json)")
    parser.add_argument("--name", default=None, help="name recorded in the card (default: the file name)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint beside --out")
    parser.add_argument("--data-root", default=None, help="folder holding MNIST/raw/ (default: $LEARNED_OPTIM_DATA or ~/.cache/learned_optim/data)")
    group = parser.add_argument_group("recipe")
    group.add_argument("--epochs", type=int, default=defaults.epochs)
    group.add_argument("--runs-per-epoch", type=int, default=defaults.runs_per_epoch)
    group.add_argument("--steps", type=int, default=defaults.steps, help="optimizee steps per run")
    group.add_argument("--unroll", type=int, default=defaults.unroll, help="truncation length")
    group.add_argument("--lr", type=float, default=defaults.meta_lr, help="meta-learning rate (Adam)")
    group.add_argument("--meta-grad-clip", type=float, default=defaults.meta_grad_clip, help="clip the meta-gradient norm (0: off)")
    group.add_argument("--val-problems", type=int, default=defaults.val_problems)
    group.add_argument("--seed", type=int, default=defaults.seed)
    group.add_argument("--device", default=defaults.device, help="cpu or cuda")
    group.add_argument("--kernel", default=defaults.kernel, help="LSTM cell on the CPU: auto (C++ where it builds), cpp or python")
    group.add_argument("--problems-per-step", type=int, default=defaults.problems_per_step,
                       help="problems per meta-update, their meta-gradients averaged; under torchrun, split across the ranks")
    group.add_argument("--divergence-factor", type=float, default=defaults.divergence_factor,
                       help="an epoch validating above this x the best so far has diverged (0: off)")
    group.add_argument("--divergence-lr-factor", type=float, default=defaults.divergence_lr_factor,
                       help="after a divergence: restore the state before the epoch and multiply the meta-lr by this")
    group.add_argument("--keep", default=defaults.keep, choices=KEEPS,
                       help="which weights go to --out: best (the best validation's epoch) or last (the last epoch's)")
    group.add_argument("--max-lr-reductions", type=int, default=defaults.max_lr_reductions,
                       help="divergences tolerated before the run stops and keeps its best epoch")
    group.add_argument("--bias-init", default=defaults.bias_init, choices=BIAS_INITS,
                       help="uniform (torch.nn's init) or zero: the untrained rule then maps a zero gradient to a zero "
                       "update (needed where gradients are small, e.g. mnist_cnn with --preprocess none)")
    group.add_argument("--meta-loss", default=defaults.meta_loss, choices=META_LOSSES,
                       help="sum: the sum of the optimizee's losses per unroll (the paper's); log: the sum of their "
                       "logarithms, so that problems count by relative progress, not by their losses' scale")
    group.add_argument("--meta-grad", default=defaults.meta_grad, choices=META_GRADS,
                       help="the meta-gradient estimator: tbptt (truncated backpropagation, the paper's) or es "
                       "(antithetic evolution strategies over whole runs; needs --unroll equal to --steps)")
    group.add_argument("--es-pairs", type=int, default=defaults.es_pairs,
                       help="es: perturbation pairs per training problem (each pair costs two runs)")
    group.add_argument("--es-sigma", type=float, default=defaults.es_sigma,
                       help="es: standard deviation of the Gaussian perturbation of each rule weight")
    group.add_argument("--init-from", default=defaults.init_from,
                       help="start from this weight file (a shipped name or a path) instead of a fresh init; "
                       "the network flags must match its card, except that they may add per-tensor inputs "
                       "(--tensor-rms-input, --net-scale-input, --tensor-count-input, --grad-noise-input), which "
                       "start at zero weight")
    group = parser.add_argument_group("network")
    group.add_argument("--cell", default=net_defaults.cell, help="lstm or gru")
    group.add_argument("--layers", type=int, default=net_defaults.num_layers)
    group.add_argument("--hidden-size", type=int, default=net_defaults.hidden_size)
    group.add_argument("--preprocess", default=net_defaults.preprocess, help="log_sign or none")
    group.add_argument("--p", type=float, default=net_defaults.p)
    group.add_argument("--output-scale", type=float, default=net_defaults.output_scale)
    group.add_argument("--grad-norm", default=net_defaults.grad_norm,
                       help="none, or tensor: each optimizee tensor's gradient rescaled to RMS --grad-norm-target first")
    group.add_argument("--grad-norm-target", type=float, default=net_defaults.grad_norm_target)
    group.add_argument("--grad-norm-power", type=float, default=net_defaults.grad_norm_power,
                       help="under --grad-norm tensor: the factor is target / (RMS_tensor^a RMS_net^(1-a)); "
                            "1: each tensor alone, 0: one factor for the whole optimizee")
    group.add_argument("--tensor-rms-input", action="store_true",
                       help="one more input per coordinate: log(RMS_tensor / RMS_net) / p of its tensor's gradient")
    group.add_argument("--tensor-input-scale", type=float, default=net_defaults.tensor_input_scale,
                       help="s > 0: the per-tensor inputs are s log(RMS_tensor / RMS_net) (and their spread) instead of "
                       "the log ratio / p; a larger input moves further per meta-update. 0 (default): / p")
    group.add_argument("--net-scale-input", action="store_true",
                       help="one more input, the same for every coordinate: the count-weighted RMS over the "
                            "optimizee's tensors of log(RMS_tensor / RMS_net) / p (how unequal its scales are)")
    group.add_argument("--tensor-count-input", action="store_true",
                       help="one more input, the same for every coordinate: log of the number of tensors the step "
                            "updates (how deep the optimizee is)")
    add_tensor_count_range(group)
    group.add_argument("--grad-noise-input", action="store_true",
                       help="one more input per coordinate: log(RMS(m) / RMS(g)) of its tensor, m an EMA (0.9) of "
                            "the gradient, centred on noise: about 0 when successive gradients are independent noise, "
                            "1.47 when they agree")
    group.add_argument("--relative-step", type=float, default=net_defaults.relative_step,
                       help="b in [0, 2]: each optimizee tensor's update times (RMS of its weights / RMS of all the "
                            "optimizee's weights)^b, the ratio clamped to [0.1, 10]; 0: off")
    group.add_argument("--grad-relative-step", type=float, default=net_defaults.grad_relative_step,
                       help="c in [0, 2]: each optimizee tensor's update times (RMS of its gradient / RMS of the "
                            "whole gradient)^c, the ratio clamped to [0.1, 10]; 0: off")
    group = parser.add_argument_group("task options (only those of the chosen task apply)")
    group.add_argument("--dim", type=int, default=None, help="quadratic: dimension")
    group.add_argument("--init", default=None, help="quadratic: initial θ, zeros or normal")
    group.add_argument("--hidden", type=_positive_ints, default=None, help="mnist_mlp: hidden layer sizes, e.g. 20 or 100,100")
    group.add_argument("--activation", default=None, help="mnist_mlp: sigmoid, relu or tanh")
    group.add_argument("--family", default=None, help="mixture: a named family of tasks (tasks.FAMILIES), e.g. mlp-family")
    group.add_argument("--batch-size", type=int, default=None, help="mnist_mlp: images per step")
    return parser


TASK_FLAGS = {
    "quadratic": ("dim", "init"),
    "mnist_mlp": ("hidden", "activation", "batch_size"),
    "linreg": ("dim",),
    "rosenbrock": (),
    "two_moons": ("hidden",),
    "mnist_cnn": ("batch_size",),
    "mixture": ("family",),
}


def config_from_args(args: argparse.Namespace) -> MetaTrainConfig:
    if args.task not in TASK_FLAGS:
        raise ValueError(f"Unknown task: {args.task!r} (available: {', '.join(sorted(TASK_FLAGS))})")
    options = {}
    for flag in ("dim", "init", "hidden", "activation", "batch_size", "family"):
        value = getattr(args, flag)
        if value is None:
            continue
        if flag not in TASK_FLAGS[args.task]:
            raise ValueError(f"--{flag.replace('_', '-')} does not apply to task {args.task!r}")
        options[flag] = list(value) if isinstance(value, tuple) else value
    net = NetConfig(
        cell=args.cell,
        num_layers=args.layers,
        hidden_size=args.hidden_size,
        preprocess=args.preprocess,
        p=args.p,
        output_scale=args.output_scale,
        grad_norm=args.grad_norm,
        grad_norm_target=args.grad_norm_target,
        grad_norm_power=args.grad_norm_power,
        tensor_rms_input=args.tensor_rms_input,
        net_scale_input=args.net_scale_input,
        tensor_count_input=args.tensor_count_input,
        tensor_count_min=args.tensor_count_range[0],
        tensor_count_max=args.tensor_count_range[1],
        grad_noise_input=args.grad_noise_input,
        tensor_input_scale=args.tensor_input_scale,
        relative_step=args.relative_step,
        grad_relative_step=args.grad_relative_step,
    )
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"Invalid device: {args.device!r} (CUDA is not available here; use --device cpu)")
    return MetaTrainConfig(
        task=args.task,
        task_options=options,
        net=net,
        epochs=args.epochs,
        runs_per_epoch=args.runs_per_epoch,
        steps=args.steps,
        unroll=args.unroll,
        meta_lr=args.lr,
        meta_grad_clip=args.meta_grad_clip,
        val_problems=args.val_problems,
        seed=args.seed,
        device=args.device,
        kernel=args.kernel,
        problems_per_step=args.problems_per_step,
        divergence_factor=args.divergence_factor,
        divergence_lr_factor=args.divergence_lr_factor,
        max_lr_reductions=args.max_lr_reductions,
        keep=args.keep,
        bias_init=args.bias_init,
        meta_loss=args.meta_loss,
        init_from=args.init_from,
        meta_grad=args.meta_grad,
        es_pairs=args.es_pairs,
        es_sigma=args.es_sigma,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1  # started by torchrun
    try:
        config = config_from_args(args)
        if distributed:
            import torch.distributed as dist

            if config.device.startswith("cuda"):
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # "cuda" is this rank's GPU
            dist.init_process_group("nccl" if config.device.startswith("cuda") else "gloo")
        metatrain(
            config,
            args.out,
            resume=args.resume,
            data_root=args.data_root,
            command="python -m learned_optim.metatrain " + shlex.join(argv),
            name=args.name,
        )
    except (ValueError, TypeError, FileExistsError, FileNotFoundError) as exc:  # DataNotFoundError is a FileNotFoundError
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    finally:
        if distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
