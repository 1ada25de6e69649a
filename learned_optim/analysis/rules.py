"""Update rules as the analysis tools see them: a state h, a gradient g, and (h, g) -> (Δx, h').

Every rule here acts coordinatewise on batches: ``h`` has shape (N, state_size) and
``g`` shape (N,); ``step`` returns the parameter change Δx (N,) and the next state
(N, state_size). The tools (update functions, fixed points, linearization) use
nothing else, so a learned rule and the hand-designed ones below are studied by the
same code, and the hand-designed ones, whose answers are known, test the tools.

Convention: the state is updated from (h, g) and Δx is read from the same step,
so for momentum h' = βh + g and Δx = −α h'.
"""

from __future__ import annotations

import math

import torch

from .. import nets
from ..features import clipped_tensor_count
from ..pretrained import RuleWeights, load_weights


class Rule:
    """A coordinatewise update rule in the analysis form."""

    name: str = "rule"
    state_size: int = 1

    def init_state(self, n: int = 1, dtype=torch.float64) -> torch.Tensor:
        return torch.zeros(n, self.state_size, dtype=dtype)

    def step(self, h: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class GradientDescent(Rule):
    """Δx = −α g; a one-number state that never changes (the tools need a state)."""

    def __init__(self, lr: float) -> None:
        self.lr, self.name = lr, f"gradient descent (α={lr:g})"

    def step(self, h, g):
        return -self.lr * g, h


class ClippedGradientDescent(Rule):
    """Δx = −α clip(g, −c, c)."""

    def __init__(self, lr: float, clip: float) -> None:
        self.lr, self.clip, self.name = lr, clip, f"clipped gradient descent (α={lr:g}, c={clip:g})"

    def step(self, h, g):
        return -self.lr * g.clamp(-self.clip, self.clip), h


class Momentum(Rule):
    """h' = β h + g, Δx = −α h'."""

    def __init__(self, lr: float, beta: float) -> None:
        self.lr, self.beta, self.name = lr, beta, f"momentum (α={lr:g}, β={beta:g})"

    def step(self, h, g):
        v = self.beta * h + g.unsqueeze(1)
        return -self.lr * v.squeeze(1), v


class RMSProp(Rule):
    """s' = ρ s + (1 − ρ) g², Δx = −α g / (√s' + ε)."""

    def __init__(self, lr: float, rho: float = 0.9, eps: float = 1e-8) -> None:
        self.lr, self.rho, self.eps, self.name = lr, rho, eps, f"RMSProp (α={lr:g}, ρ={rho:g})"

    def step(self, h, g):
        s = self.rho * h + (1 - self.rho) * g.unsqueeze(1) ** 2
        return -self.lr * g / (s.squeeze(1).sqrt() + self.eps), s


class Adam(Rule):
    """State (m, v) without bias correction: m' = β1 m + (1 − β1) g, v' = β2 v + (1 − β2) g², Δx = −α m'/(√v' + ε)."""

    state_size = 2

    def __init__(self, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.name = f"Adam (α={lr:g}, β1={beta1:g}, β2={beta2:g})"

    def step(self, h, g):
        m = self.beta1 * h[:, 0] + (1 - self.beta1) * g
        v = self.beta2 * h[:, 1] + (1 - self.beta2) * g**2
        return -self.lr * m / (v.sqrt() + self.eps), torch.stack((m, v), dim=1)


class LearnedRule(Rule):
    """A weight file's network through the package's own pure step (``nets.step``); the state is its tensors concatenated.

    ``g`` is the gradient as the rule sees it: for a rule with grad_norm="tensor", a gradient
    already rescaled to its tensor's target RMS (LearnedOptimizer does that before the step).
    A rule with ``tensor_rms_input`` also sees where the coordinate's tensor sits in the net,
    log(RMS_tensor / RMS_net) / p: ``tensor_rms_ratio`` (default 0, a tensor at the net's RMS); one with
    ``tensor_count_input`` log of how many tensors the net has: ``tensor_count`` (default: log of one tensor clipped
    to the rule's range, 0 unless its tensor_count_min is above 1). The inputs are computed by nets.rule_step,
    as in the optimizer and the meta-trainer.
    """

    def __init__(self, weights: "str | RuleWeights | None" = "default", dtype=torch.float64) -> None:
        self.weights = weights if isinstance(weights, RuleWeights) else load_weights(weights)
        self.config = self.weights.config
        self.theta = {k: v.to(dtype) for k, v in self.weights.theta.items()}
        self.state_size = self.config.state_size
        self.name = self.weights.name
        self.tensor_rms_ratio = 0.0
        self.tensor_count = math.log(clipped_tensor_count(1, self.config))
        self.step_count = 1000  # the update count a "moments" rule's bias correction reads (1000: nearly none)

    @property
    def input_names(self) -> list[str]:
        """The attributes holding the rule's per-tensor inputs, in the order of its input columns."""
        return ["tensor_rms_ratio"] * self.config.tensor_rms_input + ["tensor_count"] * self.config.tensor_count_input

    def init_state(self, n: int = 1, dtype=torch.float64) -> torch.Tensor:
        return torch.zeros(n, self.state_size, dtype=dtype)

    def step(self, h, g):
        parts = tuple(h.split([self.config.state_width(name) for name in self.config.state_names], dim=1))
        values = [getattr(self, name) for name in self.input_names]
        column = h.new_tensor(values).expand(g.shape[0], len(values)) if values else None
        update, new = nets.rule_step(self.theta, g.to(h.dtype), parts, self.config, column=column,
                                     step_count=self.step_count, impl="reference")
        return update, torch.cat(new, dim=1)
