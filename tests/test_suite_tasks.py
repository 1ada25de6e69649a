"""The long-horizon suite's tasks: every model trains, its batches and init are reproducible per seed, its evaluation
reads a fixed training subset and the test set, and the two parts share no task."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import needs_mnist
from learned_optim.tasks import PARTS, SUITE, make_task


def test_the_parts_split_the_suite():
    dev, held_out = set(PARTS["dev"]), set(PARTS["held_out"])
    assert dev.isdisjoint(held_out) and dev | held_out == set(SUITE) and len(dev) == len(held_out) == 6
    assert all(len(spec.horizons) == 2 and spec.what for spec in SUITE.values())


@needs_mnist
@pytest.mark.parametrize("name", list(SUITE))
def test_each_task_is_reproducible_and_trains(name):
    pytest.importorskip("sklearn") if "digits" in name else None
    if "fmnist" in name:
        from learned_optim.tasks.data import available_datasets

        if "fashion_mnist" not in available_datasets():
            pytest.skip("Fashion-MNIST not installed")
    task = make_task("suite", task=name)
    a, b = task.sample(3), task.sample(3)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)  # the seed's init
    assert torch.equal(a.batch(5)[1], b.batch(5)[1])
    assert not torch.equal(a.batch(5)[1], a.batch(6)[1]) or SUITE[name].batch == 0  # full batch: the same every step
    start = a.evaluate()
    opt = torch.optim.Adam(a.model.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        opt.zero_grad()
        loss = a.loss(step)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    end = a.evaluate()
    assert all(math.isfinite(v) for v in losses) and end["train_loss"] < start["train_loss"]
    if SUITE[name].loss in ("cross_entropy", "lm"):
        assert {"test_loss", "test_accuracy"} <= end.keys() and 0 <= end["test_accuracy"] <= 1
    assert task.describe()["task"] == name and task.describe()["what"] == SUITE[name].what


def test_an_unknown_task_is_refused():
    with pytest.raises(ValueError, match="Invalid task: 'nope'"):
        make_task("suite", task="nope")
