"""The meta-training recipe (``MetaTrainConfig``) and the rule's weights before training (fresh, or from a file)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import nets
from ..nets import NetConfig
from ..pretrained import RuleWeights, load_weights
from ..tasks import TRAIN_SEED_START

KERNELS = ("auto", "cpp", "python")


# "uniform": torch.nn's init for every weight; "zero": zero biases; "zero_readout": zero biases and a zero readout, so
# that a "residual" or "scale" rule starts as Adam at its output_scale
BIAS_INITS = ("uniform", "zero", "zero_readout")
META_LOSSES = ("sum", "log")
KEEPS = ("best", "last")  # which epoch's weights a run writes
# truncated backpropagation (the paper's), antithetic evolution strategies over whole runs, or persistent evolution
# strategies over truncations of long runs (Vicol et al. 2021)
META_GRADS = ("tbptt", "es", "pes")
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
    if config.bias_init in ("zero", "zero_readout"):
        for name, value in theta.items():
            if name.endswith((".b", ".b_ih", ".b_hh")) or (config.bias_init == "zero_readout" and name.startswith("readout.")):
                value.zero_()
    return theta


# rule settings a recipe may change from its --init-from file's: none of them has weights of its own
WEIGHTLESS_SETTINGS = ("output_scale", "step_decay_steps", "step_decay_power", "flip_gate")


def start_weights(config: "MetaTrainConfig") -> "RuleWeights":
    """The weight file ``init_from`` names (a shipped name or a path), checked against the recipe's architecture.

    A recipe may add per-tensor inputs (``--tensor-rms-input``, ``--tensor-count-input``) that the file's rule lacks:
    the rule is then widened, its first cell given a zero input weight for each added input, so that meta-training
    starts at exactly the file's update function (see ``widen``). A recipe may also set another nominal step
    (``--output-scale``, ``--step-decay-steps``, ``--step-decay-power``): the file's weights then start at the
    recipe's step. A "scale" recipe may start from a "residual" rule: the correction's readout row is dropped, so
    meta-training starts at the file's rule with d = 0 (benchmarks.residual_correction's ablation). A "residual"
    recipe may add or drop the flip gate (``--flip-gate``), which has no weights of its own. The returned
    weights keep the file's name and sha256 (the card names the bytes read)."""
    rule = load_weights(config.init_from)
    if _adds_tensor_inputs(rule.config, config.net):
        rule = dataclasses.replace(rule, config=config.net, theta=widen(rule.theta, rule.config, config.net))
    if rule.config.output == "residual" and config.net.output == "scale":
        theta = {**rule.theta, "readout.w": rule.theta["readout.w"][1:], "readout.b": rule.theta["readout.b"][1:]}
        rule = dataclasses.replace(rule, config=dataclasses.replace(rule.config, output="scale"), theta=theta)
    # settings without weights of their own: the same network, another step or gate
    weightless = {name: getattr(config.net, name) for name in WEIGHTLESS_SETTINGS}
    if any(getattr(rule.config, name) != value for name, value in weightless.items()):
        rule = dataclasses.replace(rule, config=dataclasses.replace(rule.config, **weightless))
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
    """Whether ``target`` is ``source`` with per-tensor inputs switched on (and the count input's range set),
    nothing else changed (and differing at all)."""
    plain = {**{name: False for name in nets.TENSOR_INPUTS}, "tensor_count_min": 1, "tensor_count_max": 0}
    return (source != target and dataclasses.replace(source, **plain) == dataclasses.replace(target, **plain)
            and all(getattr(target, name) for name in nets.TENSOR_INPUTS if getattr(source, name)))


def widen(theta: dict[str, torch.Tensor], source: NetConfig, target: NetConfig) -> dict[str, torch.Tensor]:
    """``theta`` of a rule with ``source``'s per-tensor inputs, as the same update function with ``target``'s: inputs
    that ``target`` adds get an all-zero column of the first cell's input weights (multiplied by zero, they change
    nothing). The per-tensor inputs follow the gradient features, in ``nets.TENSOR_INPUTS`` order (features.py)."""
    if not _adds_tensor_inputs(source, target):
        raise ValueError("widen: the target must be the source with per-tensor inputs added, nothing else changed")
    w = theta["cells.0.w_ih"]
    taken = w.shape[1] - source.tensor_inputs
    columns = [w[:, :taken]]
    for name in nets.TENSOR_INPUTS:
        if getattr(source, name):
            columns.append(w[:, taken: taken + 1])
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
    # "pes": a problem's run length is drawn log-uniformly from [min_steps, steps] (0: every run has `steps`), and the
    # run is cut into truncations of `unroll` steps, one meta-update after each
    min_steps: int = 0

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
        if isinstance(self.min_steps, bool) or not isinstance(self.min_steps, int) or not 0 <= self.min_steps <= self.steps:
            raise ValueError(f"Invalid min_steps: {self.min_steps!r} (0, or an int in [1, steps])")
        if self.min_steps and self.meta_grad != "pes":
            raise ValueError("Invalid min_steps: run lengths are drawn only by meta_grad 'pes'")
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
        if not self.min_steps:
            del out["min_steps"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MetaTrainConfig":
        data = dict(data)
        data["net"] = NetConfig.from_dict(data["net"])
        return cls(**data)


def train_seed(config: MetaTrainConfig, epoch: int, run: int) -> int:
    """The problem seed of a training run: disjoint from every evaluation and validation seed."""
    return TRAIN_SEED_START + (config.seed * 100_000 + epoch) * config.runs_per_epoch + run


def run_length(config: MetaTrainConfig, seed: int) -> int:
    """How many steps a problem's run has: ``steps``, or under meta_grad "pes" with ``min_steps`` a length drawn
    log-uniformly from [min_steps, steps] by the problem's seed (the same on every rank and after a resume)."""
    if not config.min_steps:
        return config.steps
    u = float(torch.rand((), generator=torch.Generator().manual_seed(seed * 7919 + 1)))
    return int(round(math.exp(math.log(config.min_steps) + u * (math.log(config.steps) - math.log(config.min_steps)))))
