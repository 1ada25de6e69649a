"""What every task provides: problems made of an nn.Module, its batches and its loss.

A task knows nothing of optimizers. ``Task.sample(seed)`` returns a ``Problem``
whose model starts from the seed's initial parameters and whose batch for step t
is a pure function of (seed, t), so the same seed replays the same run under any
optimizer, in any process, on any device.

Seed ranges keep the roles apart, so that no evaluation problem is ever seen in
baseline tuning, meta-training validation or meta-training: see the constants below.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Mapping

import torch
from torch import nn
from torch.func import functional_call

EVAL_SEEDS = range(0, 10_000)  # held-out evaluation problems (benchmarks, tables)
TUNING_SEEDS = range(10_000, 20_000)  # baseline learning-rate tuning
VALIDATION_SEEDS = range(20_000, 30_000)  # meta-training validation (best-epoch selection)
TRAIN_SEED_START = 1_000_000  # meta-training problems draw from here upwards


def step_generator(seed: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for (problem seed, step): batches are reproducible step by step."""
    # an odd multiplier spreads (seed, step) pairs without collisions for step < 2**20
    return torch.Generator(device=device).manual_seed((seed * 1_048_583 + step) % (2**63))


class Problem(abc.ABC):
    """One optimizee: a model with its initial parameters, batches and loss."""

    def __init__(self, model: nn.Module, seed: int) -> None:
        self.model = model
        self.seed = seed

    @abc.abstractmethod
    def batch(self, step: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """(model inputs, target) for optimization step ``step``."""

    @abc.abstractmethod
    def loss_fn(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss of a model output."""

    def loss(self, step: int, params: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Loss on step ``step``'s batch, of the model itself or of ``params`` in its place."""
        inputs, target = self.batch(step)
        if params is None:
            output = self.model(*inputs)
        else:
            output = functional_call(self.model, dict(params), inputs)
        return self.loss_fn(output, target)

    def evaluate(self, model: nn.Module | None = None) -> dict[str, float]:
        """Task-specific metrics at the end of a run (e.g. test accuracy); none by default."""
        return {}


class Task(abc.ABC):
    """A distribution of problems, described by a frozen config dataclass."""

    name: str

    def __init__(self, config: Any) -> None:
        self.config = config

    @abc.abstractmethod
    def sample(self, seed: int, device: torch.device | str = "cpu") -> Problem:
        """The problem of a seed."""

    def describe(self) -> dict[str, Any]:
        """The task and its config, as recorded in weight cards and result files."""
        return {"name": self.name, **dataclasses.asdict(self.config)}
