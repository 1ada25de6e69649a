"""The shipped default, trained: pinned figures on a small fixed task (a regressed default, or a change that alters
its steps, fails here), and stability over runs many times longer than a test usually takes.

The pins live in tests/data/default_quality.json with the sha256 of the rule they were taken with. A new default
must be pinned on purpose: ``LEARNED_OPTIM_REPIN=1 python -m pytest tests/test_default_quality.py`` rewrites the
file, and the diff shows what moved.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

import pytest
import torch

from learned_optim import LearnedOptimizer, load_weights

PINS = Path(__file__).parent / "data" / "default_quality.json"
PIN_TOLERANCE = 0.10  # relative; runs differ by float rounding across CPUs (vector widths, libm), not by more


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    datasets = pytest.importorskip("sklearn.datasets")
    x, y = datasets.load_digits(return_X_y=True)
    return torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)


def mlp(sizes, activation, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return torch.nn.Sequential(*layers)


def train_digits(make_opt, steps: int, *, sizes=(64, 64, 10), activation=torch.nn.ReLU, batch: int = 32,
                 seed: int = 0, every: int = 50) -> dict:
    """A digits MLP trained with minibatches drawn by ``seed``: the full-training-set loss every ``every`` steps
    (index 0: the start) and the parameter norm at the end."""
    x, y = digits()
    model = mlp(sizes, activation, seed)
    opt = make_opt(model.parameters())
    gen = torch.Generator().manual_seed(seed + 1)
    def full() -> float:
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(model(x), y))

    losses = [full()]
    for step in range(1, steps + 1):
        index = torch.randint(0, len(x), (batch,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[index]), y[index]).backward()
        opt.step()
        if step % every == 0:
            losses.append(full())
    norm = math.sqrt(sum(float(p.detach().pow(2).sum()) for p in model.parameters()))
    return {"losses": losses, "norm": norm}


def least_squares(make_opt, steps: int, seed: int = 0) -> list[float]:
    """Full-batch least squares, 32 features, condition number 1e2, a noisy target (the minimum is above 0): the
    loss above its minimum, every 10 steps."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(32, 32, generator=gen, dtype=torch.float64))
    a = torch.randn(256, 32, generator=gen, dtype=torch.float64) @ (q * torch.logspace(0, -1, 32, dtype=torch.float64)) @ q.T
    b = a @ torch.randn(32, generator=gen, dtype=torch.float64) + 0.1 * torch.randn(256, generator=gen, dtype=torch.float64)
    best = float(((a @ torch.linalg.lstsq(a, b).solution - b) ** 2).mean())
    a, b = a.float(), b.float()
    w = torch.nn.Parameter(torch.zeros(32))
    opt = make_opt([w])
    gaps = []
    for step in range(steps + 1):
        opt.zero_grad()
        loss = ((a @ w - b) ** 2).mean()
        if step % 10 == 0:
            gaps.append(float(loss.detach()) - best)
        loss.backward()
        opt.step()
    return gaps


def adam(lr: float):
    return lambda params: torch.optim.Adam(params, lr=lr)


def default(implementation: str = "fast"):
    return lambda params: LearnedOptimizer(params, implementation=implementation)


@functools.lru_cache(maxsize=None)
def pinned_run(implementation: str) -> dict:
    run = train_digits(default(implementation), 300)
    return {"final_loss": run["losses"][-1], "mean_loss": sum(run["losses"]) / len(run["losses"])}


def test_the_default_trains_the_pinned_task_to_its_pinned_figures():
    """Digits, MLP 64-64-10 ReLU, batch 32, 300 steps from seed 0: the full-training-set loss at the end and its
    mean over the run, within PIN_TOLERANCE of the pins, on the fast path and the float64-capable reference."""
    sha = load_weights("default").sha256
    figures = {impl: pinned_run(impl) for impl in ("fast", "reference")}
    adam_run = train_digits(adam(1e-3), 300)
    if os.environ.get("LEARNED_OPTIM_REPIN"):
        PINS.write_text(json.dumps({"rule_sha256": sha, "figures": figures, "adam_1e-3_final_loss": adam_run["losses"][-1],
                                    "task": "digits, MLP 64-64-10 ReLU, batch 32, 300 steps, seed 0"}, indent=2) + "\n")
    pins = json.loads(PINS.read_text())
    assert pins["rule_sha256"] == sha, (
        "the default rule changed: pin its figures on purpose (LEARNED_OPTIM_REPIN=1, see this module's docstring)")
    for impl, got in figures.items():
        for name, value in got.items():
            pinned = pins["figures"][impl][name]
            assert abs(value - pinned) <= PIN_TOLERANCE * pinned, (impl, name, value, pinned)
    # and what the pins say: the default ends below Adam at its usual learning rate on this task
    assert figures["fast"]["final_loss"] < adam_run["losses"][-1]


def test_a_regressed_rule_fails_the_pins():
    """The pins catch what they are for: the default with its steps halved (lr=0.5) misses them."""
    pins = json.loads(PINS.read_text())["figures"]["fast"]
    halved = train_digits(lambda p: LearnedOptimizer(p, lr=0.5), 300)["losses"][-1]
    assert abs(halved - pins["final_loss"]) > PIN_TOLERANCE * pins["final_loss"]


def near_best(losses: list[float], start: float, slack: float = 0.05) -> bool:
    """The run ends within ``slack`` of its decrease above the best it reached."""
    best = min(losses)
    return losses[-1] <= best + slack * (start - best)


def test_the_default_is_stable_far_past_its_meta_training_runs_on_a_memorized_set():
    """5,000 steps on the digits with a wider tanh net (it memorizes the set within a few hundred): the loss never
    rises above its start, ends near the best it reached and below Adam at 1e-3's, and the parameters grow no
    more than 3x tuned Adam's."""
    kwargs = dict(sizes=(64, 128, 10), activation=torch.nn.Tanh, batch=64, every=100)
    run = train_digits(default(), 5000, **kwargs)
    losses, start = run["losses"], run["losses"][0]
    assert max(losses[1:]) < start
    assert near_best(losses, start)
    adams = {lr: train_digits(adam(lr), 5000, **kwargs) for lr in (1e-3, 3e-3)}
    assert losses[-1] <= max(adams[1e-3]["losses"][-1], 1e-4)
    tuned = min(adams.values(), key=lambda r: r["losses"][-1])
    assert run["norm"] <= 3 * tuned["norm"]


def test_the_default_converges_where_the_loss_must_go_far_below_its_start():
    """Full-batch least squares for 3,000 steps: the gap to the minimum falls by 1e4 or more, ends near the best
    it reached (its steps shrink as the gradient does), and ends below Adam at 1e-3's."""
    gaps = least_squares(default(), 3000)
    assert gaps[-1] <= 1e-4 * gaps[0]
    assert gaps[-1] <= min(gaps) + 0.05 * (gaps[0] - min(gaps))
    assert gaps[-1] < least_squares(adam(1e-3), 3000)[-1]
