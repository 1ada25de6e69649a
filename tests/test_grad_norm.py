"""Per-tensor gradient normalization (NetConfig.grad_norm="tensor"): the rule sees each tensor at one RMS."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import batch, loss_of, run_steps, small_model
from learned_optim import LearnedOptimizer
from learned_optim.baselines import train as train_with
from learned_optim.features import normalize_per_tensor, tensor_scale
from learned_optim.metatrain import rollout
from learned_optim.nets import NetConfig
from learned_optim.pretrained import load_weights, random_weights, save_weights
from learned_optim.tasks import make_task


def rms(t: torch.Tensor) -> float:
    return float(t.double().square().mean().sqrt())


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
    opt = LearnedOptimizer(model.parameters(), weights=random_weights(seed=1), grad_norm="tensor",
                           grad_norm_target=0.01, **kwargs)
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
    assert plain.config.grad_norm == "none"  # the rule's own setting unless overridden


def test_the_three_implementations_agree_under_tensor_norm():
    fast, torch_path, reference = (trajectory(1.0, implementation=i, chunk_size=50)
                                   for i in ("fast", "torch", "reference"))
    for a, b, c in zip(fast, torch_path, reference):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(b, c, rtol=1e-4, atol=1e-5)


def test_tensor_norm_changes_the_steps():
    model_a, model_b = small_model(seed=3), small_model(seed=3)
    rule = random_weights(seed=1)
    opts = [LearnedOptimizer(model_a.parameters(), weights=rule),
            LearnedOptimizer(model_b.parameters(), weights=rule, grad_norm="tensor", grad_norm_target=0.01)]
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
        LearnedOptimizer([torch.nn.Parameter(torch.ones(2))], weights=random_weights(seed=0), **kwargs)


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


@pytest.mark.parametrize("power", [1.0, 0.5])
def test_analysis_records_the_gradients_the_rule_saw(power):
    """analyze.record: feeding its recorded gradients to the pure step reproduces the optimizer's states
    (per tensor, and with grad_norm_power < 1, where what a tensor's rule sees depends on the whole net)."""
    from learned_optim import analysis
    from learned_optim.analyze import record

    config = NetConfig(hidden_size=5, grad_norm="tensor", grad_norm_target=0.02, grad_norm_power=power)
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
    opt = LearnedOptimizer(model.parameters(), weights=random_weights(seed=1), grad_norm="tensor", grad_norm_target=0.01)
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
    opt = LearnedOptimizer(model.parameters(), weights=random_weights(seed=1), grad_norm="tensor",
                           grad_norm_target=0.01, implementation=implementation)
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e-40)
    opt.step()
    for a, b in zip(before, model.parameters()):
        assert torch.isfinite(b).all() and not torch.equal(a, b.detach())
    assert float(tensor_scale(torch.full((5,), 1e-40), 0.3)) == torch.finfo(torch.float32).max


# -- partial equalization: grad_norm_power a < 1 ------------------------------------------------


def by_hand(grads: list[torch.Tensor], target: float, power: float) -> list[torch.Tensor]:
    """target / (RMS_tensor^a RMS_net^(1-a)) in float64 from the definition (no zero or non-finite entries)."""
    flat = torch.cat([g.reshape(-1) for g in grads]).double()
    whole = float(flat.square().mean().sqrt())
    return [g.double() * target / (rms(g) ** power * whole ** (1 - power)) for g in grads]


@given(
    shapes=st.lists(st.integers(1, 40), min_size=1, max_size=5),
    log_sizes=st.lists(st.floats(-12, 4), min_size=5, max_size=5),
    power=st.floats(0.0, 1.0),
    log_c=st.floats(-20, 20),
    seed=st.integers(0, 2**16),
)
def test_partial_scale_follows_its_definition_and_ignores_a_common_factor(shapes, log_sizes, power, log_c, seed):
    gen = torch.Generator().manual_seed(seed)
    grads = [torch.randn(n, generator=gen, dtype=torch.float64) * math.exp(s) for n, s in zip(shapes, log_sizes)]
    flat = torch.cat(grads)
    out = normalize_per_tensor(flat, shapes, 0.01, power)
    torch.testing.assert_close(out, torch.cat(by_hand(grads, 0.01, power)), rtol=1e-9, atol=0)
    # every gradient times one constant: the rule sees the same numbers, whatever the power
    torch.testing.assert_close(normalize_per_tensor(flat * math.exp(log_c), shapes, 0.01, power), out, rtol=1e-9, atol=0)
    pieces = out.split(shapes)
    if power == 0.0:  # one factor for the net: the whole at the target RMS, the ratios between tensors kept
        assert rms(out) == pytest.approx(0.01, rel=1e-9)
        for piece, g in zip(pieces, grads):
            assert rms(piece) / rms(g) == pytest.approx(rms(out) / rms(flat), rel=1e-9)


def test_power_one_is_the_per_tensor_rescaling_bit_for_bit():
    flat = torch.cat([torch.randn(7) * 3, torch.randn(4) * 1e-5])
    assert torch.equal(normalize_per_tensor(flat, [7, 4], 0.02, 1.0), normalize_per_tensor(flat, [7, 4], 0.02))
    model_a, model_b = small_model(seed=3), small_model(seed=3)
    opts = [LearnedOptimizer(model_a.parameters(), weights=random_weights(seed=1), grad_norm="tensor", grad_norm_target=0.01),
            LearnedOptimizer(model_b.parameters(), weights=random_weights(seed=1), grad_norm="tensor", grad_norm_target=0.01,
                             grad_norm_power=1.0)]
    for step in range(3):
        for model, opt in zip((model_a, model_b), opts):
            opt.zero_grad()
            loss_of(model, step).backward()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(model_a.parameters(), model_b.parameters()))


class ScaledByHand:
    """The rule with grad_norm="none" on gradients rescaled by ``by_hand``: an oracle for grad_norm_power."""

    def __init__(self, params, rule, target, power):
        self.params, self.target, self.power = list(params), target, power
        self.inner = LearnedOptimizer(self.params, weights=rule, grad_norm="none", implementation="reference",
                                      state_dtype=torch.float64)

    def step(self):
        for p, g in zip(self.params, by_hand([p.grad for p in self.params], self.target, self.power)):
            p.grad.copy_(g)
        self.inner.step()


def run(model, opt, steps: int = 12, loss_scale: float = 1.0) -> list[torch.Tensor]:
    return run_steps(model, opt, steps, loss_scale)


@pytest.mark.parametrize("power", [0.0, 0.5, 0.75])
@pytest.mark.parametrize("implementation", ["fast", "torch", "reference"])
def test_partial_power_in_the_optimizer_is_the_definition(implementation, power):
    rule = random_weights(seed=1)
    model = small_model(seed=3)
    got = run(model, LearnedOptimizer(model.parameters(), weights=rule, grad_norm="tensor", grad_norm_target=0.01,
                                      grad_norm_power=power, implementation=implementation))
    oracle_model = small_model(seed=3)
    expected = run(oracle_model, ScaledByHand(oracle_model.parameters(), rule, 0.01, power))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # the loss times 1e-5: the same steps; and a power other than 1 is not the per-tensor rule
    scaled_model = small_model(seed=3)
    scaled = run(scaled_model, LearnedOptimizer(scaled_model.parameters(), weights=rule, grad_norm="tensor",
                                                grad_norm_target=0.01, grad_norm_power=power,
                                                implementation=implementation), loss_scale=1e-5)
    for a, b in zip(got, scaled):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    per_tensor = run(small_model(seed=3), LearnedOptimizer(small_model(seed=3).parameters(), weights=rule))
    assert any(not torch.allclose(a, b) for a, b in zip(got, per_tensor))


def test_the_net_rms_spans_every_param_group():
    """Two param groups at one lr take the steps of one group: RMS_net is over all the step's gradients."""
    rule = random_weights(seed=1)
    one, two = small_model(seed=3), small_model(seed=3)
    params = list(two.parameters())
    opts = [LearnedOptimizer(one.parameters(), weights=rule, grad_norm="tensor", grad_norm_target=0.01, grad_norm_power=0.5),
            LearnedOptimizer([{"params": params[:3]}, {"params": params[3:]}], weights=rule, grad_norm="tensor",
                             grad_norm_target=0.01, grad_norm_power=0.5)]
    for a, b in zip(run(one, opts[0], steps=5), run(two, opts[1], steps=5)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("implementation", ["fast", "torch", "reference"])
def test_partial_power_skips_nonfinite_entries_and_zero_gradients(implementation):
    """A nan entry is skipped (its coordinate kept, the RMS over the others) and an all-zero tensor adds nothing."""
    def first_step(poison: bool) -> list[torch.Tensor]:
        model = small_model(seed=3)
        opt = LearnedOptimizer(model.parameters(), weights=random_weights(seed=1), grad_norm="tensor",
                               grad_norm_target=0.01, grad_norm_power=0.5, implementation=implementation)
        loss_of(model, 0).backward()
        conv, scalar = model.conv.weight, model.scale
        conv.grad.view(-1)[0] = float("nan") if poison else 0.0
        scalar.grad.zero_()
        opt.step()
        return [p.detach().clone() for p in (conv, scalar, model.fc1.weight, model.fc2.weight)]

    start = small_model(seed=3)
    poisoned, zeroed = first_step(True), first_step(False)
    assert all(torch.isfinite(p).all() for p in poisoned)
    assert poisoned[0].view(-1)[0] == start.conv.weight.view(-1)[0]  # the nan coordinate is left alone
    assert not torch.equal(poisoned[0].view(-1)[1:], start.conv.weight.view(-1)[1:])  # its neighbours move
    # a zero entry instead of the nan: the same RMS numerator, a count larger by one (of 27 + ... entries),
    # so the other tensors' steps agree closely but not exactly
    for a, b in zip(poisoned[2:], zeroed[2:]):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-4)
        assert not torch.equal(a, b)


@pytest.mark.parametrize("power", [-0.1, 1.5, float("nan"), True, "0.5"])
def test_invalid_grad_norm_power_is_refused(power):
    with pytest.raises(ValueError, match="Invalid grad_norm_power"):
        LearnedOptimizer([torch.nn.Parameter(torch.ones(2))], weights=random_weights(seed=0), grad_norm_power=power)


def test_the_power_travels_in_the_weight_file_and_the_metatrain_flags(tmp_path):
    from learned_optim.metatrain import build_parser, config_from_args

    config = NetConfig(hidden_size=4, grad_norm="tensor", grad_norm_target=0.003, grad_norm_power=0.75)
    path = tmp_path / "partial.safetensors"
    save_weights(path, random_weights(config, seed=5).theta, config, {"name": "partial"})
    assert LearnedOptimizer([torch.nn.Parameter(torch.ones(3))], weights=str(path)).config.grad_norm_power == 0.75
    assert load_weights("default").config.grad_norm_power == 1.0  # a card written before the field: per tensor
    args = build_parser().parse_args(["--task", "quadratic", "--out", "x.safetensors", "--grad-norm", "tensor",
                                      "--grad-norm-power", "0.25"])
    assert config_from_args(args).net.grad_norm_power == 0.25


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("implementation", ["fast", "torch"])
def test_partial_power_on_cuda_matches_the_cpu_reference(implementation):
    """The CUDA paths (the Triton RMS with "fast", chunked torch ops with "torch") combine the net's RMS as the CPU does."""
    rule = random_weights(seed=1)
    cpu_model = small_model(seed=3)
    expected = run(cpu_model, LearnedOptimizer(cpu_model.parameters(), weights=rule, grad_norm="tensor",
                                               grad_norm_target=0.01, grad_norm_power=0.5, implementation="reference"))
    model = small_model(seed=3).cuda()
    opt = LearnedOptimizer(model.parameters(), weights=rule, grad_norm="tensor", grad_norm_target=0.01,
                           grad_norm_power=0.5, implementation=implementation)
    for step in range(12):
        opt.zero_grad()
        x, y = (v.cuda() for v in batch(step))
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    for a, b in zip(expected, model.parameters()):
        torch.testing.assert_close(b.detach().cpu(), a, rtol=1e-4, atol=1e-5)
