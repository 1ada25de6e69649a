"""Optimizee tasks: models, batches and losses, and nothing about optimizers.

    task = make_task("mnist_mlp", hidden=(20, 20), activation="relu")
    problem = task.sample(seed=0)            # problem.model, problem.loss(step)
"""

from __future__ import annotations

from typing import Any

from .base import EVAL_SEEDS, TRAIN_SEED_START, TUNING_SEEDS, VALIDATION_SEEDS, Problem, Task
from .data import DataNotFoundError
from .mixture import FAMILIES, MixtureConfig, MixtureTask
from .mnist import MNISTCNNConfig, MNISTCNNTask, MNISTMLPConfig, MNISTMLPTask
from .quadratic import QuadraticConfig, QuadraticTask
from .suite import PARTS, SUITE, SuiteConfig, SuiteTask
from .toy import LinRegConfig, LinRegTask, RosenbrockConfig, RosenbrockTask, TwoMoonsConfig, TwoMoonsTask

TASKS: dict[str, type[Task]] = {
    "quadratic": QuadraticTask,
    "mnist_mlp": MNISTMLPTask,
    # the four tasks of Maheswaranathan et al. (2021)
    "linreg": LinRegTask,
    "rosenbrock": RosenbrockTask,
    "two_moons": TwoMoonsTask,
    "mnist_cnn": MNISTCNNTask,
    # a distribution over the tasks above: how a rule learns to serve many models
    "mixture": MixtureTask,
    # the long-horizon suite's models (benchmarks.long_horizon): make_task("suite", task=...)
    "suite": SuiteTask,
}


def make_task(name: str, data_root: Any = None, **options: Any) -> Task:
    """A task by name with config options; ``data_root`` goes to tasks that read data."""
    if name not in TASKS:
        raise ValueError(f"Unknown task: {name!r} (available: {', '.join(sorted(TASKS))})")
    cls = TASKS[name]
    if cls in (MNISTMLPTask, MNISTCNNTask, MixtureTask, SuiteTask):
        return cls(data_root=data_root, **options)
    return cls(**options)


__all__ = [
    "EVAL_SEEDS",
    "TRAIN_SEED_START",
    "TUNING_SEEDS",
    "VALIDATION_SEEDS",
    "DataNotFoundError",
    "FAMILIES",
    "MixtureConfig",
    "MixtureTask",
    "LinRegConfig",
    "LinRegTask",
    "MNISTCNNConfig",
    "MNISTCNNTask",
    "MNISTMLPConfig",
    "MNISTMLPTask",
    "Problem",
    "QuadraticConfig",
    "RosenbrockConfig",
    "RosenbrockTask",
    "TwoMoonsConfig",
    "TwoMoonsTask",
    "QuadraticTask",
    "PARTS",
    "SUITE",
    "SuiteConfig",
    "SuiteTask",
    "Task",
    "TASKS",
    "make_task",
]
