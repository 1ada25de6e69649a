"""The four tasks of Maheswaranathan et al. (2021): sizes, distributions, reproducibility, and that they train."""

import math

import pytest
import torch

from conftest import needs_mnist
from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import baseline, train
from learned_optim.metatrain import MetaTrainConfig, metatrain
from learned_optim.nets import NetConfig
from learned_optim.tasks import make_task
from learned_optim.tasks.toy import rosenbrock, two_moons


def numel(problem):
    return sum(p.numel() for p in problem.model.parameters())


def test_linreg_condition_numbers_are_spread_and_exact():
    task = make_task("linreg")
    kappas = [task.condition_number(seed) for seed in range(200)]
    assert min(kappas) >= 1 and max(kappas) <= 1e3
    assert sum(k < 10 for k in kappas) > 20 and sum(k > 100 for k in kappas) > 20  # log-uniform: every decade
    a, b, kappa = task.data(7)
    eig = torch.linalg.eigvalsh((a.T @ a).double())  # the Hessian
    assert float(eig[-1] / eig[0]) == pytest.approx(kappa, rel=1e-3)
    assert task.condition_number(7) == kappa  # read off without building the problem
    problem = task.sample(7)
    with torch.no_grad():
        assert numel(problem) == 20 and float(problem.loss(0)) == pytest.approx(0.5 * float((b**2).sum()))
    losses = train(problem, baseline("SGD", 0.5), 200)
    assert losses[-1] < losses[0]


def test_rosenbrock_starts_in_the_papers_box_and_has_its_minimum_at_one_one():
    task = make_task("rosenbrock")
    starts = torch.stack([task.sample(s).model.x.detach() for s in range(100)])
    assert (starts[:, 0] > -2).all() and (starts[:, 0] < 2).all() and (starts[:, 1] > -1).all() and (starts[:, 1] < 3).all()
    assert float(rosenbrock(torch.tensor([1.0, 1.0]))) == 0.0
    losses = train(task.sample(3), baseline("Adam", 0.05), 500)
    assert losses[-1] < 0.1 * losses[0]


def test_two_moons_has_the_papers_network_and_trains():
    x, y = two_moons(256, 0.1, 0)
    assert x.shape == (256, 2) and int(y.sum()) == 128
    task = make_task("two_moons")
    problem = task.sample(0)
    assert numel(problem) == 8577
    assert torch.equal(task.sample(0).model[0].weight, problem.model[0].weight)  # seeded initial weights
    assert not torch.equal(task.sample(1).model[0].weight, problem.model[0].weight)
    losses = train(problem, baseline("Adam", 0.01), 200)
    assert losses[-1] < 0.5 * losses[0]


@needs_mnist
def test_mnist_cnn_has_82250_parameters_and_batches_of_100():
    task = make_task("mnist_cnn")
    problem = task.sample(0)
    assert numel(problem) == 82250
    (x,), y = problem.batch(0)
    assert x.shape == (100, 784) and y.shape == (100,)
    assert math.isfinite(float(problem.loss(0)))
    losses = train(problem, baseline("Adam", 1e-3), 20)
    assert losses[-5:].mean() < losses[:5].mean()


def test_a_gradient_only_gru_meta_trains_on_rosenbrock_and_loads(tmp_path):
    """The paper's rule: a GRU that sees only the raw gradient; the package's meta-trainer makes one."""
    net = NetConfig(cell="gru", num_layers=1, hidden_size=8, preprocess="none", output_scale=0.01)
    config = MetaTrainConfig(task="rosenbrock", net=net, epochs=2, runs_per_epoch=2, steps=20, unroll=5, val_problems=2)
    out = metatrain(config, tmp_path / "re.safetensors", log=lambda m: None)
    rule = load_weights(out)
    assert rule.config.cell == "gru" and rule.card["task"]["name"] == "rosenbrock"
    point = torch.nn.Parameter(torch.tensor([-1.0, 2.0]))
    opt = LearnedOptimizer([point], weights=rule)
    rosenbrock(point).backward()
    opt.step()
    assert torch.isfinite(point).all()
