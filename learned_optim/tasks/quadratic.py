"""Random quadratics, the first task of Andrychowicz et al. (2016).

    f(θ) = ||W θ - y||²,   W ∈ R^{d×d}, y ∈ R^d standard normal per problem, d = 10

θ starts at zero (as in the public PyTorch reproduction) or standard normal.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import Problem, Task

INITS = ("zeros", "normal")


@dataclass(frozen=True)
class QuadraticConfig:
    dim: int = 10  # dimension of θ (W is dim × dim)
    init: str = "zeros"  # initial θ: "zeros" or "normal"

    def __post_init__(self) -> None:
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"Invalid dim: {self.dim!r} (must be an int >= 1)")
        if self.init not in INITS:
            raise ValueError(f"Invalid init: {self.init!r} (allowed: {', '.join(INITS)})")


class QuadraticModel(nn.Module):
    """θ as a module: forward(W) = W θ."""

    def __init__(self, theta: torch.Tensor) -> None:
        super().__init__()
        self.theta = nn.Parameter(theta)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w @ self.theta


class QuadraticProblem(Problem):
    def __init__(self, model: nn.Module, seed: int, w: torch.Tensor, y: torch.Tensor) -> None:
        super().__init__(model, seed)
        self.w, self.y = w, y

    def batch(self, step: int):
        return (self.w,), self.y  # deterministic: the same W and y at every step

    def loss_fn(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((output - target) ** 2).sum()


class QuadraticTask(Task):
    name = "quadratic"

    def __init__(self, config: QuadraticConfig | None = None, **options) -> None:
        super().__init__(config or QuadraticConfig(**options))

    def sample(self, seed: int, device: torch.device | str = "cpu") -> QuadraticProblem:
        gen = torch.Generator().manual_seed(seed)
        d = self.config.dim
        w = torch.randn(d, d, generator=gen)
        y = torch.randn(d, generator=gen)
        theta = torch.randn(d, generator=gen) if self.config.init == "normal" else torch.zeros(d)
        model = QuadraticModel(theta.to(device))
        return QuadraticProblem(model, seed, w.to(device), y.to(device))
