"""Per-tensor gradient normalization (NetConfig.grad_norm="tensor"): the rule sees each tensor at one RMS."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import batch, loss_of, run_steps, small_model
from learned_optim import LearnedOptimizer
from learned_optim.baselines import train as train_with
from learned_optim.features import normalize_per_tensor, scale_for_rms, tensor_rms
from learned_optim.metatrain import rollout
from learned_optim.nets import NetConfig
from learned_optim.pretrained import load_weights, random_weights, save_weights
from learned_optim.tasks import make_task


def rms(t: torch.Tensor) -> float:
    return float(t.double().square().mean().sqrt())


def tensor_scale(g: torch.Tensor, target: float, chunk_size=None, dtype=None) -> torch.Tensor:
    """The factor grad_norm="tensor" puts on a gradient: target / RMS of its finite entries (features.py)."""
    return scale_for_rms(tensor_rms(g, chunk_size, dtype)[0], target).to(dtype or g.dtype)


NORMED = NetConfig(grad_norm="tensor", grad_norm_target=0.01)


def normed_rule(seed: int = 1):
    """An untrained rule with grad_norm="tensor" in its card (a rule's settings come from its weight file)."""
    return random_weights(NORMED, seed=seed)


@given(
    n=st.integers(1, 300),
    log_size=st.floats(-30, 20),
    target=st.floats(1e-4, 10.0),
    seed=st.integers(0, 2**16),
)
def test_normalized_gradient_has_the_target_rms_whatever_its_size(n, log_size, target, seed):
    g = torch.randn(n, generator=torch.Generator().manual_seed(seed)) * math.exp(log_size)
    if not bool((g != 0).any()):
        return
    normalized = g * tensor_scale(g, target)
    assert rms(normalized) == pytest.approx(target, rel=1e-5)
    # scale invariance: the rule sees the same numbers for c g as for g
    again = (g * 1e-3) * tensor_scale(g * 1e-3, target)
    torch.testing.assert_close(again, normalized, rtol=1e-5, atol=0)


def test_scale_ignores_nonfinite_entries_and_leaves_zero_gradients_alone():
    g = torch.tensor([3.0, -4.0, float("nan"), float("inf")])
    assert float(tensor_scale(g, 1.0)) == pytest.approx(1 / math.sqrt(12.5))  # RMS of (3, -4)
    assert float(tensor_scale(torch.zeros(5), 1.0)) == 1.0
    assert float(tensor_scale(torch.full((3,), float("nan")), 1.0)) == 1.0
    tiny = torch.full((4,), 1e-38)  # squares underflow float32: still exact
    assert float(tensor_scale(tiny, 1.0)) == pytest.approx(1e38, rel=1e-6)


def test_each_tensor_of_a_flat_gradient_is_normalized_on_its_own():
    flat = torch.cat([torch.full((3,), 2.0), torch.full((5,), -1e-6)])
    out = normalize_per_tensor(flat, [3, 5], 0.5)
    torch.testing.assert_close(out, torch.cat([torch.full((3,), 0.5), torch.full((5,), -0.5)]))


def trajectory(loss_scale: float, **kwargs) -> list[torch.Tensor]:
    model = small_model(seed=3)
    opt = LearnedOptimizer(model.parameters(), weights=normed_rule(), **kwargs)
    for step in range(15):
        opt.zero_grad()
        (loss_of(model, step) * loss_scale).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("implementation", ["fast", "torch", "reference"])
def test_with_tensor_norm_the_optimizer_ignores_the_scale_of_the_loss(implementation):
    """Rescaling the loss by 1e-5 rescales every gradient: a normalized rule takes the same steps."""
    base = trajectory(1.0, implementation=implementation)
    scaled = trajectory(1e-5, implementation=implementation)
    for a, b in zip(base, scaled):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    plain = LearnedOptimizer(small_model(seed=3).parameters(), weights=random_weights(seed=1))
    assert plain.config.grad_norm == "none"  # the rule's own setting


def test_the_three_implementations_agree_under_tensor_norm():
    fast, torch_path, reference = (trajectory(1.0, implementation=i, chunk_size=50)
                                   for i in ("fast", "torch", "reference"))
    for a, b, c in zip(fast, torch_path, reference):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(b, c, rtol=1e-4, atol=1e-5)


def test_tensor_norm_changes_the_steps():
    model_a, model_b = small_model(seed=3), small_model(seed=3)
    plain, normed = random_weights(seed=1), normed_rule()
    assert all(torch.equal(plain.theta[k], normed.theta[k]) for k in plain.theta)  # the same weights
    opts = [LearnedOptimizer(model_a.parameters(), weights=plain),
            LearnedOptimizer(model_b.parameters(), weights=normed)]
    for model, opt in zip((model_a, model_b), opts):
        loss_of(model, 0).backward()
        opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(model_a.parameters(), model_b.parameters()))


@pytest.mark.parametrize("kwargs, message", [
    (dict(grad_norm="layer"), "Invalid grad_norm"),
    (dict(grad_norm="tensor", grad_norm_target=0.0), "Invalid grad_norm_target"),
    (dict(grad_norm_target=float("nan")), "Invalid grad_norm_target"),
])
def test_invalid_grad_norm_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NetConfig(**kwargs)


def test_the_optimizer_takes_no_rule_settings():
    """A rule's settings come from its card: the constructor has no grad_norm to override them with."""
    with pytest.raises(TypeError):
        LearnedOptimizer([torch.nn.Parameter(torch.ones(2))], weights=random_weights(seed=0), grad_norm="tensor")


def test_meta_trainer_rollout_normalizes_as_the_optimizer_does():
    """metatrain's functional path applies the same per-tensor normalization as LearnedOptimizer."""
    config = NetConfig(hidden_size=6, grad_norm="tensor", grad_norm_target=0.02)
    rule = random_weights(config, seed=2)
    task = make_task("two_moons", hidden=[8, 8])
    losses = rollout(rule.theta, config, task.sample(4), steps=20)
    via_optimizer = train_with(task.sample(4), lambda p: LearnedOptimizer(p, weights=rule), 20)
    torch.testing.assert_close(via_optimizer, losses, rtol=1e-4, atol=1e-5)
    plain = rollout(rule.theta, NetConfig(hidden_size=6), task.sample(4), steps=20)
    assert not torch.allclose(plain, losses)


def test_a_weight_file_carries_its_grad_norm(tmp_path):
    config = NetConfig(hidden_size=4, grad_norm="tensor", grad_norm_target=0.003)
    rule = random_weights(config, seed=5)
    path = tmp_path / "normed.safetensors"
    save_weights(path, rule.theta, config, {"name": "normed"})
    loaded = load_weights(path)
    assert loaded.config.grad_norm == "tensor" and loaded.config.grad_norm_target == 0.003
    assert LearnedOptimizer([torch.nn.Parameter(torch.ones(3))], weights=str(path)).config.grad_norm == "tensor"


def test_metatrain_flags_set_the_rules_grad_norm():
    from learned_optim.metatrain import build_parser, config_from_args

    args = build_parser().parse_args(["--task", "quadratic", "--out", "x.safetensors", "--grad-norm", "tensor", "--grad-norm-target", "0.002"])
    net = config_from_args(args).net
    assert net.grad_norm == "tensor" and net.grad_norm_target == 0.002
    with pytest.raises(ValueError, match="Invalid grad_norm"):
        config_from_args(build_parser().parse_args(["--task", "quadratic", "--out", "x.safetensors", "--grad-norm", "layer"]))


@given(n=st.integers(1, 200), chunk=st.integers(1, 64), seed=st.integers(0, 2**16), poison=st.booleans())
def test_scale_read_in_chunks_is_the_scale_read_whole(n, chunk, seed, poison):
    g = torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 1e-3
    if poison:
        g[seed % n] = float("nan")
    whole = tensor_scale(g, 0.01)
    torch.testing.assert_close(tensor_scale(g, 0.01, chunk_size=chunk), whole, rtol=1e-5, atol=0)
    torch.testing.assert_close(tensor_scale(g.double(), 0.01, chunk_size=chunk, dtype=torch.float32), whole, rtol=1e-5, atol=0)


def test_analysis_records_the_gradients_the_rule_saw():
    """analyze's record: feeding its recorded gradients to the pure step reproduces the optimizer's states."""
    from learned_optim import analysis
    from learned_optim.analysis.record import record

    config = NetConfig(hidden_size=5, grad_norm="tensor", grad_norm_target=0.02)
    rule = analysis.LearnedRule(random_weights(config, seed=7))
    states, grads, _, _, inputs = record(rule, make_task("two_moons", hidden=[8, 8]), seeds=[3], steps=4, coords=40)
    assert inputs is None  # a rule without per-tensor inputs
    for t in range(4):
        _, replayed = rule.step(states[0, t], grads[0, t])
        torch.testing.assert_close(replayed, states[0, t + 1], rtol=1e-6, atol=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tensor_norm_on_cuda_matches_the_cpu_reference():
    """The CUDA path (optimizer and meta-trainer rollout) normalizes as the CPU reference does."""
    cpu = trajectory(1.0, implementation="reference")
    model = small_model(seed=3).cuda()
    opt = LearnedOptimizer(model.parameters(), weights=normed_rule())
    for step in range(15):
        opt.zero_grad()
        x, y = (v.cuda() for v in batch(step))
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    for a, b in zip(cpu, model.parameters()):
        torch.testing.assert_close(b.detach().cpu(), a, rtol=1e-4, atol=1e-5)
    config = NetConfig(hidden_size=6, grad_norm="tensor", grad_norm_target=0.02)
    rule = random_weights(config, seed=2)
    task = make_task("two_moons", hidden=[8, 8])
    on_cpu = rollout(rule.theta, config, task.sample(4), steps=20)
    on_gpu = rollout({k: v.cuda() for k, v in rule.theta.items()}, config, task.sample(4, "cuda"), steps=20, device="cuda")
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("implementation", ["fast", "torch", "reference"])
def test_all_subnormal_gradients_still_move_the_parameters(implementation):
    """RMS ~1e-40: the scale would overflow float32 to inf and every entry be skipped as non-finite; it is
    capped at float32's largest value instead, so the rule sees gradients of ~0.03 and steps."""
    model = small_model(seed=3)
    opt = LearnedOptimizer(model.parameters(), weights=normed_rule(), implementation=implementation)
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e-40)
    opt.step()
    for a, b in zip(before, model.parameters()):
        assert torch.isfinite(b).all() and not torch.equal(a, b.detach())
    assert float(tensor_scale(torch.full((5,), 1e-40), 0.3)) == torch.finfo(torch.float32).max


# -- an oracle: the rule without normalization on gradients rescaled by hand -------------------------


def by_hand(grads: list[torch.Tensor], target: float) -> list[torch.Tensor]:
    """Each gradient times target / its RMS, in float64 from the definition (no zero or non-finite entries)."""
    return [g.double() * target / rms(g) for g in grads]


@given(
    shapes=st.lists(st.integers(1, 40), min_size=1, max_size=5),
    log_sizes=st.lists(st.floats(-12, 4), min_size=5, max_size=5),
    log_c=st.floats(-20, 20),
    seed=st.integers(0, 2**16),
)
def test_per_tensor_scale_follows_its_definition_and_ignores_a_common_factor(shapes, log_sizes, log_c, seed):
    gen = torch.Generator().manual_seed(seed)
    grads = [torch.randn(n, generator=gen, dtype=torch.float64) * math.exp(s) for n, s in zip(shapes, log_sizes)]
    flat = torch.cat(grads)
    out = normalize_per_tensor(flat, shapes, 0.01)
    torch.testing.assert_close(out, torch.cat(by_hand(grads, 0.01)), rtol=1e-9, atol=0)
    torch.testing.assert_close(normalize_per_tensor(flat * math.exp(log_c), shapes, 0.01), out, rtol=1e-9, atol=0)


class ScaledByHand:
    """The rule with grad_norm="none" on gradients rescaled by ``by_hand``: an oracle for grad_norm="tensor"."""

    def __init__(self, params, rule, target):
        self.params, self.target = list(params), target
        plain = dataclasses.replace(rule, config=dataclasses.replace(rule.config, grad_norm="none"))
        self.inner = LearnedOptimizer(self.params, weights=plain, implementation="reference", state_dtype=torch.float64)

    def step(self):
        for p, g in zip(self.params, by_hand([p.grad for p in self.params], self.target)):
            p.grad.copy_(g)
        self.inner.step()


@pytest.mark.parametrize("implementation", ["fast", "torch", "reference"])
def test_tensor_norm_in_the_optimizer_is_the_definition(implementation):
    rule = normed_rule()
    model = small_model(seed=3)
    got = run_steps(model, LearnedOptimizer(model.parameters(), weights=rule, implementation=implementation))
    oracle_model = small_model(seed=3)
    expected = run_steps(oracle_model, ScaledByHand(oracle_model.parameters(), rule, 0.01))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("implementation", ["fast", "torch", "reference"])
def test_tensor_norm_skips_nonfinite_entries_and_zero_gradients(implementation):
    """A nan entry is skipped (its coordinate kept, the RMS over the others) and an all-zero tensor keeps its value."""
    model = small_model(seed=3)
    start = small_model(seed=3)
    opt = LearnedOptimizer(model.parameters(), weights=normed_rule(), implementation=implementation)
    loss_of(model, 0).backward()
    model.conv.weight.grad.view(-1)[0] = float("nan")
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert model.conv.weight.view(-1)[0] == start.conv.weight.view(-1)[0]  # the nan coordinate is left alone
    assert not torch.equal(model.conv.weight.view(-1)[1:], start.conv.weight.view(-1)[1:])  # its neighbours move
