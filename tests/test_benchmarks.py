import json

import pytest
import torch

from conftest import needs_mnist
from learned_optim import NetConfig, save_weights
from learned_optim.baselines import LR_GRID, baseline, compare, train, tune_lr
from learned_optim.nets import init_theta
from learned_optim.tasks import EVAL_SEEDS, make_task


@pytest.fixture
def tiny_rule(tmp_path):
    config = NetConfig(hidden_size=4)
    path = tmp_path / "tiny.safetensors"
    save_weights(path, init_theta(config, torch.Generator().manual_seed(0)), config, {"name": "tiny"})
    return str(path)


def test_train_records_losses_before_each_step_and_stops_on_divergence():
    task = make_task("quadratic")
    problem = task.sample(0)
    losses = train(problem, baseline("SGD", 0.01), 5)
    assert losses[0] == pytest.approx(float((task.sample(0).y ** 2).sum()))
    assert (losses[1:] < losses[:-1]).all()
    diverged = train(task.sample(0), baseline("SGD", 1e3), 50)
    assert torch.isinf(diverged[-1]) and torch.isfinite(diverged[0])


def test_tuning_picks_the_best_rate_and_refuses_evaluation_seeds():
    task = make_task("quadratic")
    best, scores = tune_lr(task, "Adam", seeds=range(10_000, 10_002), steps=20)
    assert best in LR_GRID and scores[best] == min(scores.values())
    with pytest.raises(ValueError, match="TUNING_SEEDS"):
        tune_lr(task, "Adam", seeds=EVAL_SEEDS[:2], steps=5)


def test_compare_runs_every_optimizer_on_the_same_problems():
    task = make_task("quadratic")
    results = compare(task, {"a": baseline("SGD", 0.01), "b": baseline("SGD", 0.01)}, [3, 4], 6)
    assert torch.equal(results["a"]["losses"], results["b"]["losses"])
    assert results["a"]["losses"].shape == (2, 6)


@needs_mnist
def test_base_tasks_quick_writes_its_result_files(tmp_path, tiny_rule):
    from benchmarks import base_tasks

    assert base_tasks.main(["--quick", "--out", str(tmp_path), "--weights", tiny_rule]) == 0
    data = json.loads((tmp_path / "base_tasks.json").read_text())
    for key in ("command", "git_commit", "device", "wall_time_s"):
        assert key in data["provenance"]
    for task in ("quadratic", "mnist_mlp"):
        results = data["tasks"][task]["results"]
        assert f"LearnedOptimizer ({tiny_rule})" in results and "Adam (lr=1e-3, default)" in results
        assert set(data["tasks"][task]["tuning"]) == {"Adam", "RMSprop", "SGD", "NAG"}
        assert (tmp_path / f"base_tasks_{task}.png").stat().st_size > 1000
    assert "test_accuracy" in data["tasks"]["mnist_mlp"]["results"]["Adam (lr=1e-3, default)"]
    assert "| optimizer | sum of losses | final loss |" in (tmp_path / "base_tasks.md").read_text()


@needs_mnist
@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]
)
def test_metatrain_speed_quick(tmp_path, device):
    from benchmarks import metatrain_speed

    assert metatrain_speed.main(["--quick", "--out", str(tmp_path), "--device", device]) == 0
    data = json.loads((tmp_path / "metatrain_speed.json").read_text())
    assert data["results"]["ours, PyTorch cell"]["optimizee_steps_per_s"] > 0
    assert data["results"]["notebook-style, PyTorch cell"]["optimizee_steps_per_s"] > 0


def test_demo_runs_and_prints_the_comparison(capsys, tiny_rule):
    from learned_optim import demo

    assert demo.main(["--weights", tiny_rule, "--steps", "5", "--seeds", "2", "--tune-seeds", "1", "--tasks", "quadratic"]) == 0
    out = capsys.readouterr().out
    assert "LearnedOptimizer" in out and "Adam (lr=1e-3, its default)" in out and "tuned" in out
