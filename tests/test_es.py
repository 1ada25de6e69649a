"""The evolution-strategies meta-gradient (metatrain --meta-grad es)."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import interrupted_run

from learned_optim import load_weights
from learned_optim import metatrain as mt
from learned_optim.metatrain import estimators as mt_estimators
from learned_optim.metatrain import train as mt_loop
from learned_optim.metatrain import MetaTrainConfig, checkpoint_path, es_gradient, main, metatrain, run_meta_loss
from learned_optim.nets import NetConfig
from learned_optim.tasks import make_task

SMALL = NetConfig(hidden_size=3, num_layers=1)
ES = dict(task="quadratic", epochs=2, runs_per_epoch=2, steps=10, unroll=10, val_problems=2, net=NetConfig(hidden_size=4),
          meta_grad="es", es_pairs=2, es_sigma=0.01)


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors]).double()


def test_the_estimate_converges_to_the_finite_difference_gradient():
    """On one problem, the ES estimate's cosine with the meta-loss's gradient (central differences per rule weight)
    grows with the pairs toward 1, as an unbiased estimate's does (about sqrt(n / (n + D)) for D weights)."""
    config = MetaTrainConfig(task="quadratic", steps=10, unroll=10, net=SMALL, meta_grad="es", es_sigma=0.01)
    theta = mt.initial_theta(config, torch.device("cpu"))
    problem = make_task("quadratic").sample(123)
    fd, h = [], 1e-2
    for k, v in theta.items():
        for i in range(v.numel()):
            moved = {name: w.detach().clone() for name, w in theta.items()}
            moved[k].view(-1)[i] += h
            high = run_meta_loss(moved, problem, config)
            moved[k].view(-1)[i] -= 2 * h
            fd.append((high - run_meta_loss(moved, problem, config)) / (2 * h))
    fd = torch.tensor(fd, dtype=torch.float64)
    cosines = {}
    for pairs in (10, 400):
        grads, stats = es_gradient(theta, problem, MetaTrainConfig(**{**config.__dict__, "es_pairs": pairs}), seed=1)
        assert stats["meta_loss_count"] == pairs and stats["skipped_unrolls"] == 0
        cosines[pairs] = torch.nn.functional.cosine_similarity(flat(grads) / pairs, fd, dim=0).item()
    assert cosines[400] > 0.85 and cosines[400] > cosines[10] + 0.2, cosines


def test_the_run_meta_loss_sums_the_losses_after_each_update():
    config = MetaTrainConfig(task="quadratic", steps=6, unroll=6, net=SMALL)
    theta = mt.initial_theta(config, torch.device("cpu"))
    problem = make_task("quadratic").sample(5)
    losses = mt.rollout(theta, SMALL, problem, 7).double()
    assert run_meta_loss(theta, problem, config) == pytest.approx(float(losses[1:].sum()), rel=1e-12)
    log = MetaTrainConfig(**{**config.__dict__, "meta_loss": "log"})
    assert run_meta_loss(theta, problem, log) == pytest.approx(float(losses[1:].log().sum()), rel=1e-9)


@settings(max_examples=20, deadline=None)
@given(w=st.lists(st.floats(-3, 3), min_size=76, max_size=76), seed=st.integers(0, 2**31), sigma=st.floats(1e-3, 1.0))
def test_on_a_linear_meta_loss_each_pair_is_exact_in_its_direction(monkeypatch, w, seed, sigma):
    """L(φ) = w·φ: a pair's difference is 2σ w·ε exactly, so the estimate is Σ_k (w·ε_k) ε_k whatever σ, drawn from
    the seed alone (the same seed, the same estimate)."""
    w = torch.tensor(w, dtype=torch.float64)
    monkeypatch.setattr(mt_estimators, "run_meta_loss", lambda theta, problem, config, impl="fast": float(flat(theta.values()) @ w))
    config = MetaTrainConfig(task="quadratic", steps=10, unroll=10, net=SMALL, meta_grad="es", es_pairs=3, es_sigma=sigma)
    theta = mt.initial_theta(config, torch.device("cpu"))
    grads, stats = es_gradient(theta, None, config, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    expected = torch.zeros(76, dtype=torch.float64)
    for _ in range(3):
        eps = flat([torch.randn(v.shape, generator=generator) for v in theta.values()])
        expected += (eps @ w) * eps
    assert (flat(grads) - expected).norm() <= 1e-3 * expected.norm() + 1e-6  # float32 weights: rounding only
    again, _ = es_gradient(theta, None, config, seed=seed)
    assert torch.equal(flat(again), flat(grads))


def test_a_pair_with_a_diverged_run_is_dropped(monkeypatch):
    calls = {"n": 0}

    def meta_loss(theta, problem, config, impl="fast"):
        calls["n"] += 1
        return float("inf") if calls["n"] == 3 else float(flat(theta.values()).sum())  # the second pair's first run

    monkeypatch.setattr(mt_estimators, "run_meta_loss", meta_loss)
    config = MetaTrainConfig(task="quadratic", steps=10, unroll=10, net=SMALL, meta_grad="es", es_pairs=3)
    theta = mt.initial_theta(config, torch.device("cpu"))
    scores = []
    grads, stats = es_gradient(theta, None, config, seed=4, scores=scores)
    assert stats["meta_loss_count"] == 2 and stats["skipped_unrolls"] == 1
    assert len(scores) == 3 and scores[1][0] == float("inf") and torch.isfinite(torch.tensor(scores[::2])).all()
    generator = torch.Generator().manual_seed(4)
    eps = [flat([torch.randn(v.shape, generator=generator) for v in theta.values()]) for _ in range(3)]
    expected = eps[0].sum() * eps[0] + eps[2].sum() * eps[2]  # L = Σφ: each pair gives (Σε) ε
    assert torch.allclose(flat(grads), expected, rtol=1e-4, atol=1e-3)


def test_es_meta_training_improves_an_untrained_rule_and_resumes_exactly(tmp_path, monkeypatch):
    config = MetaTrainConfig(**{**ES, "epochs": 4, "runs_per_epoch": 4, "es_pairs": 4, "meta_lr": 0.05})
    straight = load_weights(metatrain(config, tmp_path / "a.safetensors", log=lambda m: None))
    history = straight.card["validation"]["history"]
    assert straight.card["validation"]["best"] < 0.9 * history[0]["val"], history
    assert straight.card["metatrain"]["meta_grad"] == "es" and straight.card["metatrain"]["es_pairs"] == 4
    log = [json.loads(line) for line in (tmp_path / "a.log.jsonl").read_text().splitlines()]
    assert all(entry["skipped_unrolls"] == 0 and entry["train_meta_loss"] > 0 for entry in log)

    # killed in the second run of epoch 2
    interrupted_run(monkeypatch, mt_loop, "es_runs", 6, lambda: metatrain(config, tmp_path / "b.safetensors", log=lambda m: None))
    assert checkpoint_path(tmp_path / "b.safetensors").exists()
    resumed = load_weights(metatrain(config, tmp_path / "b.safetensors", resume=True, log=lambda m: None))
    assert all(torch.equal(straight.theta[k], resumed.theta[k]) for k in straight.theta)
    with pytest.raises(ValueError, match="another recipe"):  # the estimator is part of the recipe
        metatrain(MetaTrainConfig(**{**config.__dict__, "es_sigma": 0.02}), tmp_path / "b.safetensors", resume=True,
                  log=lambda m: None)


def test_the_default_estimator_leaves_cards_as_they_were():
    assert not {"meta_grad", "es_pairs", "es_sigma"} & set(MetaTrainConfig().to_dict())
    es = MetaTrainConfig(**ES)
    assert MetaTrainConfig.from_dict(es.to_dict()) == es


@pytest.mark.parametrize("options, message", [
    (dict(meta_grad="reinforce"), "Invalid meta_grad"),
    (dict(meta_grad="es", steps=10, unroll=5), "unroll must equal steps"),
    (dict(meta_grad="es", steps=10, unroll=10, es_sigma=0.0), "Invalid es_sigma"),
    (dict(meta_grad="es", steps=10, unroll=10, es_sigma=float("nan")), "Invalid es_sigma"),
    (dict(meta_grad="es", steps=10, unroll=10, es_pairs=0), "Invalid es_pairs"),
])
def test_bad_estimator_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        MetaTrainConfig(**options)


def test_cli_takes_the_estimator(tmp_path, capsys):
    out = tmp_path / "cli.safetensors"
    assert main(["--task", "quadratic", "--out", str(out), "--epochs", "1", "--runs-per-epoch", "1", "--steps", "6",
                 "--unroll", "6", "--val-problems", "1", "--hidden-size", "3", "--dim", "4", "--meta-grad", "es",
                 "--es-pairs", "2", "--es-sigma", "0.05"]) == 0
    recipe = load_weights(out).card["metatrain"]
    assert (recipe["meta_grad"], recipe["es_pairs"], recipe["es_sigma"]) == ("es", 2, 0.05)
    with pytest.raises(SystemExit) as info:
        main(["--task", "quadratic", "--out", str(tmp_path / "x.safetensors"), "--meta-grad", "es"])
    assert info.value.code == 2 and "unroll must equal steps" in capsys.readouterr().err
