"""Shared fixtures. MNIST comes from ../shared/data beside the repository when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

from learned_optim.pretrained import random_weights

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

settings.register_profile(
    "default", deadline=None, max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.load_profile("default")

if not os.environ.get("LEARNED_OPTIM_DATA") and (SHARED_DATA / "MNIST" / "raw").is_dir():
    os.environ["LEARNED_OPTIM_DATA"] = str(SHARED_DATA)


def mnist_root() -> Path | None:
    root = Path(os.environ.get("LEARNED_OPTIM_DATA", SHARED_DATA))
    return root if (root / "MNIST" / "raw").is_dir() else None


# skipped where MNIST is absent, except where the data is required (CI sets LEARNED_OPTIM_REQUIRE_DATA=1):
# there a missing data root fails the tests instead of hiding them
needs_mnist = pytest.mark.skipif(
    mnist_root() is None and not os.environ.get("LEARNED_OPTIM_REQUIRE_DATA"),
    reason="MNIST not found (set LEARNED_OPTIM_DATA)",
)


@pytest.fixture(scope="session")
def rule():
    """Untrained weights: a deterministic, non-trivial rule for behavioural tests."""
    return random_weights(seed=0)


def small_model(seed: int = 0, dtype=torch.float32) -> torch.nn.Module:
    """A model with several tensor shapes: matrices, vectors, a conv kernel and a scalar."""
    gen = torch.Generator().manual_seed(seed)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 3, 3)
            self.fc1 = torch.nn.Linear(12, 7)
            self.fc2 = torch.nn.Linear(7, 2)
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, x):
            h = torch.relu(self.conv(x)).flatten(1)[:, :12]
            return self.fc2(torch.tanh(self.fc1(h))) * self.scale

    net = Net()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return net.to(dtype)


def batch(step: int, dtype=torch.float32):
    gen = torch.Generator().manual_seed(1000 + step)
    x, y = torch.randn(16, 1, 5, 5, generator=gen), torch.randn(16, 2, generator=gen)
    return x.to(dtype), y.to(dtype)  # the same numbers in every dtype


def loss_of(model, step: int) -> torch.Tensor:
    dtype = next(model.parameters()).dtype
    x, y = batch(step, dtype)
    return ((model(x) - y) ** 2).float().mean()
