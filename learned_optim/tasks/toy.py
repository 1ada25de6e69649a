"""The first three tasks of Maheswaranathan et al. (2021): linear regression, Rosenbrock, two moons.

- ``linreg``: f(x) = ½‖Ax − b‖², x ∈ R^dim, A ∈ R^(rows×dim) built as U diag(σ) Vᵀ with
  random orthogonal U, V and singular values spread log-uniformly over
  [1/√κ, 1] for a per-problem κ drawn log-uniformly from [1, max_condition]:
  the Hessian AᵀA then has condition number κ, so the task holds a spread of
  conditionings (``condition_number`` gives each problem's, for the histogram).
  b is standard normal; x starts at zero. The paper does not give its sizes:
  dim = 20, rows = 40 and max_condition = 1e3 are ours.
- ``rosenbrock``: f(x, y) = (1 − x)² + 100 (y − x²)², initial points uniform over
  (−2, 2) × (−1, 3), as in the paper.
- ``two_moons``: a 2 → 64 → 64 → 64 → 1 tanh MLP (8,577 parameters, as in the paper)
  with the logistic loss on a fixed two-moons dataset (full batch, so the gradients
  are deterministic, as in the paper); problems differ by their initial weights.
  The dataset (``points`` samples, Gaussian noise ``noise``) is generated here, so no
  extra dependency is needed.

All three are deterministic per (seed, step): every step sees the same data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import Problem, Task
from .mnist import mlp


class _Vector(nn.Module):
    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.x = nn.Parameter(value)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.x


class _FixedDataProblem(Problem):
    def __init__(self, model, seed, inputs: tuple[torch.Tensor, ...], target: torch.Tensor, loss) -> None:
        super().__init__(model, seed)
        self.inputs, self.target, self._loss = inputs, target, loss

    def batch(self, step: int):
        return self.inputs, self.target

    def loss_fn(self, output, target):
        return self._loss(output, target)


# -- linear regression ------------------------------------------------------------------


@dataclass(frozen=True)
class LinRegConfig:
    dim: int = 20  # parameters
    rows: int = 40  # rows of A
    max_condition: float = 1e3  # condition numbers of AᵀA are drawn log-uniformly from [1, this]

    def __post_init__(self) -> None:
        for name in ("dim", "rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Invalid {name}: {value!r} (must be an int >= 1)")
        if self.rows < self.dim:
            raise ValueError(f"Invalid rows: {self.rows} (must be >= dim, {self.dim}, for a full-rank A)")
        if not self.max_condition >= 1:
            raise ValueError(f"Invalid max_condition: {self.max_condition!r} (must be >= 1)")


class LinRegTask(Task):
    name = "linreg"

    def __init__(self, config: LinRegConfig | None = None, **options) -> None:
        super().__init__(config or LinRegConfig(**options))

    def data(self, seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(A, b, cond(AᵀA)) of a seed's problem."""
        c = self.config
        gen = torch.Generator().manual_seed(seed)
        kappa = self._kappa(gen)
        u, _ = torch.linalg.qr(torch.randn(c.rows, c.dim, generator=gen, dtype=torch.float64))
        v, _ = torch.linalg.qr(torch.randn(c.dim, c.dim, generator=gen, dtype=torch.float64))
        # singular values log-uniform in [kappa^-1/2, 1], the ends included: cond(AᵀA) = kappa exactly
        spread = torch.rand(c.dim, generator=gen, dtype=torch.float64)
        spread[0], spread[-1] = 0.0, 1.0
        sigma = kappa ** (-0.5 * spread)
        a = (u * sigma) @ v.T
        b = torch.randn(c.rows, generator=gen, dtype=torch.float64)
        return a.float(), b.float(), kappa

    def _kappa(self, gen: torch.Generator) -> float:
        """The first draw of a problem's generator: its condition number, log-uniform in [1, max_condition]."""
        return math.exp(torch.rand((), generator=gen).item() * math.log(self.config.max_condition))

    def condition_number(self, seed: int) -> float:
        """cond(AᵀA), the Hessian's condition number, of a seed's problem (without building the problem)."""
        return self._kappa(torch.Generator().manual_seed(seed))

    def sample(self, seed: int, device: torch.device | str = "cpu") -> Problem:
        a, b, _ = self.data(seed)
        model = _Vector(torch.zeros(self.config.dim)).to(device)
        a, b = a.to(device), b.to(device)
        return _FixedDataProblem(model, seed, (), b, lambda x, target: 0.5 * ((a @ x - target) ** 2).sum())


# -- Rosenbrock ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RosenbrockConfig:
    x_range: tuple[float, float] = (-2.0, 2.0)
    y_range: tuple[float, float] = (-1.0, 3.0)


def rosenbrock(point: torch.Tensor) -> torch.Tensor:
    x, y = point[0], point[1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


class RosenbrockTask(Task):
    name = "rosenbrock"

    def __init__(self, config: RosenbrockConfig | None = None, **options) -> None:
        super().__init__(config or RosenbrockConfig(**options))

    def sample(self, seed: int, device: torch.device | str = "cpu") -> Problem:
        gen = torch.Generator().manual_seed(seed)
        (x0, x1), (y0, y1) = self.config.x_range, self.config.y_range
        u = torch.rand(2, generator=gen)
        start = torch.stack((x0 + (x1 - x0) * u[0], y0 + (y1 - y0) * u[1]))
        model = _Vector(start).to(device)
        return _FixedDataProblem(model, seed, (), torch.zeros((), device=device), lambda p, _: rosenbrock(p))


# -- two moons ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TwoMoonsConfig:
    points: int = 256  # samples in the dataset (half per moon)
    noise: float = 0.1  # standard deviation of the Gaussian noise added to each point
    hidden: tuple[int, ...] = (64, 64, 64)
    data_seed: int = 0  # the dataset is the same for every problem

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if isinstance(self.points, bool) or not isinstance(self.points, int) or self.points < 2:
            raise ValueError(f"Invalid points: {self.points!r} (must be an int >= 2)")


def two_moons(points: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved half circles, labels 0 and 1, with Gaussian noise."""
    gen = torch.Generator().manual_seed(seed)
    upper, lower = points // 2, points - points // 2
    t_up, t_low = torch.linspace(0, math.pi, upper), torch.linspace(0, math.pi, lower)
    first = torch.stack((torch.cos(t_up), torch.sin(t_up)), dim=1)
    second = torch.stack((1 - torch.cos(t_low), 0.5 - torch.sin(t_low)), dim=1)
    x = torch.cat((first, second)) + noise * torch.randn(points, 2, generator=gen)
    y = torch.cat((torch.zeros(upper), torch.ones(lower)))
    return x, y


class TwoMoonsTask(Task):
    name = "two_moons"

    def __init__(self, config: TwoMoonsConfig | None = None, **options) -> None:
        super().__init__(config or TwoMoonsConfig(**options))
        self.x, self.y = two_moons(self.config.points, self.config.noise, self.config.data_seed)

    def sample(self, seed: int, device: torch.device | str = "cpu") -> Problem:
        gen = torch.Generator().manual_seed(seed)
        model = mlp((2, *self.config.hidden, 1), "tanh", gen).to(device)
        loss = lambda logits, target: F.binary_cross_entropy_with_logits(logits.squeeze(1), target)  # noqa: E731
        return _FixedDataProblem(model, seed, (self.x.to(device),), self.y.to(device), loss)
