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


def run_steps(model, opt, steps: int = 12, loss_scale: float = 1.0) -> list[torch.Tensor]:
    """``steps`` steps of ``opt`` on ``loss_of`` (times ``loss_scale``): the parameters at the end."""
    for step in range(steps):
        for p in model.parameters():
            p.grad = None
        (loss_of(model, step) * loss_scale).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def distributed_optimizer(params, option: "str | None" = None):
    """The optimizer of the distributed tests: l2l-mlp-distill (per-tensor scale and inputs: each tensor's RMS and
    the whole net's, reductions across the shards); ``"input"``: a random rule with both per-tensor inputs and no
    scale; ``"decay"``: l2l-mlp-distill with weight decay; ``"default"``: the shipped default (moving averages and a
    step count in its state)."""
    from learned_optim import LearnedOptimizer
    from learned_optim.nets import NetConfig
    from learned_optim.pretrained import random_weights

    if option == "input":
        rule = random_weights(NetConfig(tensor_rms_input=True, tensor_count_input=True), seed=1)
        return LearnedOptimizer(params, weights=rule)
    if option == "decay":
        return LearnedOptimizer(params, weights="l2l-mlp-distill", weight_decay=1e-3)
    if option == "default":
        return LearnedOptimizer(params)
    return LearnedOptimizer(params, weights="l2l-mlp-distill")


def interrupted_run(monkeypatch, module, name: str, call: int, run) -> None:
    """``run()`` with ``module.name`` raising KeyboardInterrupt on its ``call``-th call (a run killed mid-epoch);
    asserts that it was interrupted, then puts the function back."""
    calls, real = {"n": 0}, getattr(module, name)

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, dying)
    try:
        with pytest.raises(KeyboardInterrupt):
            run()
    finally:
        monkeypatch.setattr(module, name, real)
