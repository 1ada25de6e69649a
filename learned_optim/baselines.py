"""Hand-designed optimizers, a training loop shared by every optimizer, and learning-rate tuning.

Every optimizer, learned or not, is run by the same ``train`` loop on the same
problems (a problem seed fixes the initial parameters and every batch), and
every baseline gets its learning rate from the same grid, picked on tuning
seeds that are disjoint from the evaluation seeds.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import torch

from .tasks import TUNING_SEEDS, Task

# the grid of the reproductions: 1, 0.3, 0.1, ..., 1e-5
LR_GRID: tuple[float, ...] = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001, 3e-4, 1e-4, 3e-5, 1e-5)

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]

BASELINES: dict[str, Callable[[Iterable[torch.nn.Parameter], float], torch.optim.Optimizer]] = {
    "Adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
    "RMSprop": lambda params, lr: torch.optim.RMSprop(params, lr=lr),
    "SGD": lambda params, lr: torch.optim.SGD(params, lr=lr),
    "NAG": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True),
}


def baseline(name: str, lr: float) -> OptimizerFactory:
    """A factory for a named baseline at a learning rate."""
    if name not in BASELINES:
        raise ValueError(f"Unknown baseline: {name!r} (available: {', '.join(BASELINES)})")
    return lambda params: BASELINES[name](params, lr)


def train(problem, make_optimizer: OptimizerFactory, steps: int) -> torch.Tensor:
    """Train ``problem.model`` in place; returns the losses f(θ_0), ..., f(θ_{steps-1}).

    A run whose loss turns non-finite stops there; its remaining losses are inf.
    """
    return train_and_evaluate(problem, make_optimizer, steps)[0]


def train_and_evaluate(
    problem, make_optimizer: OptimizerFactory, steps: int, evaluate_at: Sequence[int] = ()
) -> tuple[torch.Tensor, dict[int, dict[str, float] | None]]:
    """``train``, and ``problem.evaluate()`` after each step count in ``evaluate_at`` (None once diverged).

    A run's first k steps do not depend on how long it goes on, so one run of the
    longest horizon gives the results of every shorter one.
    """
    optimizer = make_optimizer(problem.model.parameters())
    losses = torch.full((steps,), float("inf"))
    evaluations: dict[int, dict[str, float] | None] = {k: None for k in evaluate_at}
    for t in range(steps):
        if t in evaluations:
            evaluations[t] = problem.evaluate()
        optimizer.zero_grad(set_to_none=True)
        loss = problem.loss(t)
        if not torch.isfinite(loss):
            return losses, evaluations
        losses[t] = loss.detach()
        loss.backward()
        optimizer.step()
    if steps in evaluations:
        evaluations[steps] = problem.evaluate()
    return losses, evaluations


def score(losses: torch.Tensor) -> float:
    """The tuning objective: the sum of losses over the run (inf if it diverged)."""
    total = float(losses.sum())
    return total if math.isfinite(total) else float("inf")


def tune_lr(
    task: Task,
    name: str,
    seeds: Sequence[int] = TUNING_SEEDS[:20],
    steps: int = 100,
    grid: Sequence[float] = LR_GRID,
    device: torch.device | str = "cpu",
) -> tuple[float, dict[float, float]]:
    """(best learning rate, mean sum of losses of every rate) of a baseline on tuning seeds."""
    if set(seeds) - set(TUNING_SEEDS):
        raise ValueError("Tuning must use seeds from tasks.TUNING_SEEDS (disjoint from evaluation seeds)")
    scores = {}
    for lr in grid:
        runs = [score(train(task.sample(seed, device), baseline(name, lr), steps)) for seed in seeds]
        scores[lr] = sum(runs) / len(runs)
    best = min(grid, key=lambda lr: (scores[lr], -lr))
    return best, scores


def compare(
    task: Task,
    optimizers: dict[str, OptimizerFactory],
    seeds: Sequence[int],
    steps: int,
    device: torch.device | str = "cpu",
    wrap: Callable[[Iterable, int, str], Iterable] = lambda items, total, desc: items,
) -> dict[str, dict]:
    """Run every optimizer on the same problems: {name: {"losses": (seeds, steps), "metrics": [...]}}."""
    results = {}
    for name, factory in optimizers.items():
        curves, metrics = [], []
        for seed in wrap(seeds, len(seeds), name):
            problem = task.sample(seed, device)
            curves.append(train(problem, factory, steps))
            metrics.append(problem.evaluate())
        results[name] = {"losses": torch.stack(curves), "metrics": metrics}
    return results


# -- random search, as Maheswaranathan et al. (2021) tuned their baselines -------------------------

# hyperparameter -> (low, high, transform): sampled log-uniformly in [low, high]; "1-" samples 1 - value that way
SEARCH_SPACES: dict[str, dict[str, tuple[float, float, str]]] = {
    "Momentum": {"lr": (1e-5, 1.0, "log"), "momentum": (1e-3, 0.5, "1-")},
    "RMSprop": {"lr": (1e-5, 1.0, "log"), "alpha": (1e-3, 0.5, "1-"), "eps": (1e-8, 1e-2, "log")},
    "Adam": {"lr": (1e-5, 1.0, "log"), "beta1": (1e-3, 0.5, "1-"), "beta2": (1e-4, 0.1, "1-"), "eps": (1e-8, 1e-2, "log")},
}


def configured(name: str, config: dict[str, float]) -> OptimizerFactory:
    """A factory for a searched baseline with a sampled configuration."""
    if name == "Momentum":
        return lambda params: torch.optim.SGD(params, lr=config["lr"], momentum=config["momentum"])
    if name == "RMSprop":
        return lambda params: torch.optim.RMSprop(params, lr=config["lr"], alpha=config["alpha"], eps=config["eps"])
    if name == "Adam":
        return lambda params: torch.optim.Adam(params, lr=config["lr"], betas=(config["beta1"], config["beta2"]), eps=config["eps"])
    raise ValueError(f"Unknown searched baseline: {name!r} (available: {', '.join(SEARCH_SPACES)})")


def sample_config(name: str, generator: torch.Generator) -> dict[str, float]:
    config = {}
    for key, (low, high, kind) in SEARCH_SPACES[name].items():
        value = math.exp(math.log(low) + torch.rand((), generator=generator).item() * (math.log(high) - math.log(low)))
        config[key] = 1.0 - value if kind == "1-" else value
    return config


def random_search(
    task: Task,
    name: str,
    samples: int,
    seeds: Sequence[int] = TUNING_SEEDS[:5],
    steps: int = 100,
    search_seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[dict[str, float], list[tuple[dict[str, float], float]]]:
    """(best configuration, every (configuration, mean training loss over the run)) of a baseline.

    The objective is the paper's meta-objective: the mean training loss over the run, averaged over tuning seeds.
    """
    if set(seeds) - set(TUNING_SEEDS):
        raise ValueError("Tuning must use seeds from tasks.TUNING_SEEDS (disjoint from evaluation seeds)")
    generator = torch.Generator().manual_seed(search_seed)
    tried = []
    for _ in range(samples):
        config = sample_config(name, generator)
        means = [score(train(task.sample(seed, device), configured(name, config), steps)) / steps for seed in seeds]
        tried.append((config, sum(means) / len(means)))
    best = min(tried, key=lambda item: item[1])[0]
    return best, tried
