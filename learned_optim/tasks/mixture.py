"""A distribution of tasks: each seed's problem comes from one member task.

    task = make_task("mixture", members=[("mnist_mlp", {"hidden": [32, 32], "activation": "relu"}),
                                         ("quadratic", {})])
    task.sample(seed)   # member seed % len(members), sampled with the same seed

Meta-training on a mixture is how a rule learns to serve many models rather than
one. The member of a seed is ``seed % len(members)``, so
consecutive meta-training seeds go round the members in turn and validation (its
own seed range) covers them evenly; a problem is exactly what its member task
gives for that seed, on any device. Named families (``FAMILIES``) keep recipes
short on the command line: ``--task mixture --family mlp-family``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .base import Problem, Task


def _mlps(rows) -> tuple[tuple[str, dict[str, Any]], ...]:
    """Family members from (hidden sizes, activation, batch size) rows: MNIST MLPs."""
    return tuple(("mnist_mlp", {"hidden": list(hidden), "activation": activation, "batch_size": batch})
                 for hidden, activation, batch in rows)


# MNIST MLPs that differ from every cell of the deep_wide grid (benchmarks/deep_wide.py) in shape or
# activation, so that a rule meta-trained on them is evaluated there on models it never saw.
FAMILIES: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    "mlp-family": _mlps((
        ((32,), "sigmoid", 128),
        ((16, 16), "sigmoid", 128),
        ((48, 48), "tanh", 64),
        ((24, 24, 24), "relu", 128),
        ((64,), "relu", 256),
        ((32, 32, 32, 32), "sigmoid", 128),
        ((128, 64), "sigmoid", 128),
        ((200,), "tanh", 128),
    )),
}
# mlp-family with four more small one- and two-layer sigmoid nets (a third of the members instead of an eighth):
# the paper's MNIST base task is a 1x20 sigmoid MLP, the cell where l2l-mnist, trained on it alone, still wins.
FAMILIES["mlp-family-plus"] = FAMILIES["mlp-family"] + _mlps(
    (hidden, "sigmoid", batch) for hidden, batch in (((24,), 128), ((16,), 128), ((48,), 64), ((28, 28), 128))
)
# mlp-family-plus with one net that is deep and wide at once (4x128 sigmoid, not a grid cell): rules trained on
# mlp-family-plus over whole runs drift away from the grid's 5x300, which no other member resembles.
FAMILIES["mlp-family-deep"] = FAMILIES["mlp-family-plus"] + _mlps((((128, 128, 128, 128), "sigmoid", 128),))
# mlp-family-plus with four small-batch ReLU nets (batch 32-64, none a grid cell): rules trained at batch 64-256
# take about four times too large a step on noisy ReLU nets (docs/research/a-default-for-deep-and-wide-nets.md).
FAMILIES["mlp-family-noisy"] = FAMILIES["mlp-family-plus"] + _mlps(
    (hidden, "relu", batch) for hidden, batch in (((32,), 32), ((96,), 64), ((48, 48), 48), ((40,), 32))
)

# Mostly one-layer nets, sigmoid and ReLU (ReLU kept in the objective, unlike a single-net specialist): tried as a
# partner for weight-space interpolation with l2l-mlp-family-plus (fine-tuned on these, that rule gains on the base
# task and loses the grid's 5x300 before it gains enough).
FAMILIES["mlp-shallow"] = _mlps((
    ((24,), "sigmoid", 128),
    ((16,), "sigmoid", 128),
    ((24,), "relu", 128),
    ((32,), "relu", 256),
    ((48,), "tanh", 64),
    ((28, 28), "sigmoid", 128),
    ((16, 16, 16), "tanh", 128),
))

# mlp-shallow with five deeper members (three to six layers, sigmoid and ReLU, none a grid cell): a family that spans
# depth, for a rule that sees the net's tensor count (``--tensor-count-input``) and may treat one-layer nets apart.
FAMILIES["mlp-depth"] = FAMILIES["mlp-shallow"] + _mlps((
    ((32, 32, 32, 32), "sigmoid", 128),
    ((24, 24, 24), "relu", 128),
    ((48, 48, 48, 48, 48), "sigmoid", 128),
    ((24, 24, 24, 24, 24, 24), "sigmoid", 128),
    ((32, 32, 32, 32, 32), "relu", 128),
))

# Small, cheap problems of several kinds, for meta-training over long runs on a CPU: MLPs on the digits and MNIST with
# five activations and batches of 32-128, two moons, linear regression, quadratics. None is a task of the
# long-horizon suite (learned_optim/tasks/suite.py) or a cell of the deep_wide grid.
FAMILIES["small-problems"] = (
    ("mnist_mlp", {"dataset": "digits", "hidden": [32], "activation": "relu", "batch_size": 32}),
    ("mnist_mlp", {"dataset": "digits", "hidden": [64, 64], "activation": "sigmoid", "batch_size": 64}),
    ("mnist_mlp", {"dataset": "digits", "hidden": [48, 48, 48], "activation": "gelu", "batch_size": 128}),
    ("mnist_mlp", {"hidden": [32], "activation": "silu", "batch_size": 128}),
    ("two_moons", {}),
    ("linreg", {}),
    ("quadratic", {}),
)
# Small nets on datasets too large to memorize within a run (MNIST, Fashion-MNIST), at batches of 32-128, with one
# memorizable digits net and the quadratics: where the loss cannot go to 0 quickly, so that a rule is rewarded for
# converging, not for racing. None is a task of the long-horizon suite or a cell of the deep_wide grid.
FAMILIES["small-nets-large-data"] = (
    ("mnist_mlp", {"hidden": [32], "activation": "relu", "batch_size": 64}),
    ("mnist_mlp", {"dataset": "fashion_mnist", "hidden": [32, 32], "activation": "gelu", "batch_size": 128}),
    ("mnist_mlp", {"hidden": [64], "activation": "sigmoid", "batch_size": 128}),
    ("mnist_mlp", {"dataset": "fashion_mnist", "hidden": [48], "activation": "silu", "batch_size": 32}),
    ("mnist_mlp", {"dataset": "digits", "hidden": [32], "activation": "relu", "batch_size": 32}),
    ("mnist_mlp", {"dataset": "fashion_mnist", "hidden": [24, 24, 24], "activation": "relu", "batch_size": 64}),
    ("quadratic", {}),
)


@dataclass(frozen=True)
class MixtureConfig:
    members: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]  # (task name, sorted option items)

    @classmethod
    def from_members(cls, members: Sequence[Sequence[Any]]) -> "MixtureConfig":
        if not members:
            raise ValueError("Invalid members: a mixture needs at least one member task")
        normalized = []
        for member in members:
            if len(member) != 2 or not isinstance(member[0], str) or not isinstance(member[1], dict):
                raise ValueError(f"Invalid member: {member!r} (a (task name, options dict) pair)")
            if member[0] == "mixture":
                raise ValueError("Invalid member: 'mixture' (mixtures do not nest)")
            normalized.append((member[0], tuple(sorted(member[1].items()))))
        return cls(tuple(normalized))


class MixtureTask(Task):
    name = "mixture"

    def __init__(self, data_root: Any = None, members: Sequence[Sequence[Any]] = (), family: str | None = None) -> None:
        if family is not None:
            if members:
                raise ValueError("Invalid mixture: give members or family, not both")
            if family not in FAMILIES:
                raise ValueError(f"Unknown family: {family!r} (available: {', '.join(sorted(FAMILIES))})")
            members = FAMILIES[family]
        from . import make_task  # the registry imports this module

        super().__init__(MixtureConfig.from_members(members))
        self.family = family
        self.tasks = [make_task(name, data_root=data_root, **dict(options)) for name, options in self.config.members]

    def member(self, seed: int) -> int:
        """Index of the member task that a seed's problem comes from."""
        return seed % len(self.tasks)

    def sample(self, seed: int, device: torch.device | str = "cpu") -> Problem:
        return self.tasks[self.member(seed)].sample(seed, device)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "members": [task.describe() for task in self.tasks]}


__all__ = ["FAMILIES", "MixtureConfig", "MixtureTask"]

