"""NetConfig.grad_noise_input: one more input per coordinate, log(RMS(m_hat) / RMS(g)) of its tensor, m an exponential
moving average of the raw gradient, centred on independent noise (the one per-tensor input with a state of its own). The optimizer's three
implementations against the float64 definition are in test_tensor_rms_input.py (its "noise" and "every" inputs);
here the value itself, the state that carries it, and the meta-trainer's copy of it."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import loss_of, mnist_root, needs_mnist, run_steps, small_model
from learned_optim import LearnedOptimizer
from learned_optim.baselines import train
from learned_optim.features import GRAD_NOISE_BETA, grad_noise_value, tensor_rms, update_grad_ema
from learned_optim.metatrain import build_parser, config_from_args, rollout, widen
from learned_optim.nets import NetConfig
from learned_optim.pretrained import RuleWeights, load_weights, random_weights, save_weights
from learned_optim.tasks import make_task

NOISE = dict(grad_norm="tensor", grad_norm_target=0.01, tensor_rms_input=True, grad_noise_input=True)


def _value(ema, updates, grad):
    return float(grad_noise_value(tensor_rms(ema)[0], updates, tensor_rms(grad)[0]))


@settings(deadline=None, max_examples=40)
@given(n=st.integers(1, 60), chunk=st.integers(1, 70), seed=st.integers(0, 2**16), holes=st.integers(0, 5))
def test_the_ema_is_its_definition_in_any_chunks_and_skips_nonfinite_entries(n, chunk, seed, holes):
    gen = torch.Generator().manual_seed(seed)
    ema, grad = torch.randn(n, generator=gen), torch.randn(n, generator=gen)
    bad = torch.randperm(n, generator=gen)[: min(holes, n)]
    grad[bad[::2]], grad[bad[1::2]] = float("nan"), float("inf")
    expected = torch.where(torch.isfinite(grad), GRAD_NOISE_BETA * ema + (1 - GRAD_NOISE_BETA) * grad, ema)
    whole, pieces = ema.clone(), ema.clone()
    update_grad_ema(whole, grad)
    update_grad_ema(pieces, grad, chunk_size=chunk)
    torch.testing.assert_close(whole, expected)
    assert torch.equal(whole, pieces) and torch.isfinite(whole).all()


@settings(deadline=None, max_examples=30)
@given(n=st.integers(2, 200), steps=st.integers(1, 30), log_c=st.floats(-15, 15), seed=st.integers(0, 2**16))
def test_a_steady_gradient_reads_agreement_at_every_step_and_any_scale(n, steps, log_c, seed):
    """m_k = (1 - b^k) g for a gradient that does not change, so the bias-corrected ratio is 1 from the first step,
    log sqrt((1 + b) / (1 - b)) above the noise level; the value ignores a common factor on the gradients."""
    g = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 10.0**log_c
    ema = torch.zeros_like(g)
    b = GRAD_NOISE_BETA
    for k in range(1, steps + 1):
        update_grad_ema(ema, g)
        assert _value(ema, k, g) == pytest.approx(0.5 * math.log((1 + b) / (1 - b)), abs=1e-9)


def test_independent_noise_reads_zero_and_agreement_reads_its_ceiling():
    """Gradients drawn afresh around zero each step: RMS(m) / RMS(g) -> sqrt((1 - b) / (1 + b)), where the value is
    centred (0); the same noise around a large common mean reads near log sqrt((1 + b) / (1 - b)), 1.47 at b = 0.9.
    In between, in between."""
    gen = torch.Generator().manual_seed(0)
    ema_noise, ema_mean, ema_mix = (torch.zeros(20_000, dtype=torch.float64) for _ in range(3))
    mean = torch.randn(20_000, generator=gen, dtype=torch.float64)
    for k in range(1, 101):
        noise = torch.randn(20_000, generator=gen, dtype=torch.float64)
        for ema, g in ((ema_noise, noise), (ema_mean, 10 * mean + noise), (ema_mix, mean + noise)):
            update_grad_ema(ema, g)
    b = GRAD_NOISE_BETA
    agree = 0.5 * math.log((1 + b) / (1 - b))
    assert _value(ema_noise, 100, noise) == pytest.approx(0.0, abs=0.03)
    assert _value(ema_mean, 100, 10 * mean + noise) == pytest.approx(agree, abs=0.02)
    assert 0.3 < _value(ema_mix, 100, mean + noise) < agree - 0.3


def test_no_update_or_a_zero_gradient_reads_zero():
    assert grad_noise_value(1.0, 0, 2.0) == 0.0 and grad_noise_value(0.0, 3, 2.0) == 0.0
    assert grad_noise_value(1.0, 3, 0.0) == 0.0
    assert float(grad_noise_value(torch.tensor(1.0), 0, torch.tensor(2.0))) == 0.0


def _optimizer_run(weights, steps: int, split: "int | None" = None, state_dtype=torch.float32):
    """``steps`` steps on small_model; with ``split``, the optimizer is rebuilt from its state_dict after that many."""
    model = small_model(seed=3)
    opt = LearnedOptimizer(model.parameters(), weights=weights, state_dtype=state_dtype)
    run_steps(model, opt, split or steps)
    if split:
        saved = opt.state_dict()
        opt = LearnedOptimizer(model.parameters(), weights=weights, state_dtype=state_dtype)
        opt.load_state_dict(saved)
        for t in range(split, steps):
            opt.zero_grad()
            loss_of(model, t).backward()
            opt.step()
    return model, opt


def test_the_state_holds_the_ema_and_a_state_dict_carries_it():
    rule = random_weights(NetConfig(**NOISE), seed=1)
    whole, opt = _optimizer_run(rule, 8)
    state = opt.state[whole.fc1.weight]
    assert state["grad_ema"].shape == whole.fc1.weight.shape and state["grad_ema"].dtype == torch.float32
    assert state["grad_ema_updates"] == 8 and math.isfinite(float(state["grad_noise"]))
    resumed, _ = _optimizer_run(rule, 8, split=4)
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    # with a low-precision recurrent state the EMA stays float32, through a state_dict too
    _, low = _optimizer_run(rule, 3, split=2, state_dtype=torch.bfloat16)
    state = next(iter(low.state.values()))
    assert state["h0"].dtype == torch.bfloat16 and state["grad_ema"].dtype == torch.float32


def test_a_state_dict_with_an_ema_of_another_shape_is_refused():
    rule = random_weights(NetConfig(**NOISE), seed=1)
    model, opt = _optimizer_run(rule, 2)
    saved = opt.state_dict()
    saved["state"][0]["grad_ema"] = torch.zeros(3)
    fresh = LearnedOptimizer(model.parameters(), weights=rule)
    with pytest.raises(ValueError, match="grad_ema"):
        fresh.load_state_dict(saved)
    assert len(fresh.state) == 0


@needs_mnist
def test_the_meta_trainer_keeps_the_same_ema_as_the_optimizer():
    """metatrain's rollout (the runs meta-training scores) and LearnedOptimizer take the same steps for a rule that
    reads the noise input; the same rule with that input's weights at zero is the rule without it."""
    base = load_weights("default")
    target = dataclasses.replace(base.config, grad_noise_input=True)
    theta = widen(base.theta, base.config, target)
    assert torch.equal(theta["cells.0.w_ih"][:, :-1], base.theta["cells.0.w_ih"]) and not theta["cells.0.w_ih"][:, -1].any()
    silent = RuleWeights(config=target, theta=theta, card={}, name="silent", sha256="0" * 64)
    loud_theta = dict(theta, **{"cells.0.w_ih": theta["cells.0.w_ih"].clone()})
    # small enough weights that the run is not chaotic: rounding differences (1e-5 at step 5) would otherwise grow
    loud_theta["cells.0.w_ih"][:, -1] = 0.1 * torch.randn(80, generator=torch.Generator().manual_seed(0))
    loud = RuleWeights(config=target, theta=loud_theta, card={}, name="loud", sha256="1" * 64)
    task = make_task("mnist_mlp", data_root=str(mnist_root()), hidden=(20,), batch_size=32)
    problem_seed = 7
    runs = {name: train(task.sample(problem_seed), lambda p, w=w: LearnedOptimizer(p, weights=w), 20)
            for name, w in (("base", base), ("silent", silent), ("loud", loud))}
    assert torch.equal(runs["base"], runs["silent"])
    assert not torch.allclose(runs["base"], runs["loud"], rtol=1e-3)
    rolled = rollout(loud.theta, target, task.sample(problem_seed), 20)
    torch.testing.assert_close(rolled, runs["loud"], rtol=2e-3, atol=2e-4)


def test_the_input_travels_in_the_weight_file_and_the_metatrain_flag(tmp_path):
    rule = random_weights(NetConfig(**NOISE), seed=1)
    save_weights(tmp_path / "r.safetensors", rule.theta, rule.config, card={"name": "r"})
    loaded = load_weights(str(tmp_path / "r.safetensors"))
    assert loaded.config == rule.config and loaded.theta["cells.0.w_ih"].shape == (80, 4)
    assert "grad_noise_input" not in NetConfig().to_dict() and NetConfig(**NOISE).to_dict()["grad_noise_input"]
    assert not load_weights("default").config.grad_noise_input
    parser = build_parser()
    out = ["--task", "two_moons", "--out", str(tmp_path / "x.safetensors")]
    net = config_from_args(parser.parse_args(out + ["--grad-noise-input"])).net
    assert net.grad_noise_input and net.input_size == 3
    with pytest.raises(ValueError, match="Invalid grad_noise_input"):
        NetConfig(grad_noise_input=1)
