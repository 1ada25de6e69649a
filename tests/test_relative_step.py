"""NetConfig.relative_step (b): each tensor's update times clamp(RMS(w_tensor) / RMS(w_net), 1/R, R)^b, RMS(w_net)
over every parameter the step updates (features.relative_step_factors)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import batch, loss_of, run_steps, small_model
from learned_optim import LearnedOptimizer
from learned_optim.features import RELATIVE_STEP_RANGE, relative_step_column, relative_step_factors
from learned_optim.metatrain import build_parser, config_from_args
from learned_optim.nets import NetConfig
from learned_optim.pretrained import load_weights, random_weights, save_weights


def definition(tensors, power: float) -> list[float]:
    """The factors in float64, from the weights themselves."""
    flat = [t.detach().double().reshape(-1) for t in tensors]
    whole = math.sqrt(sum(float(f.square().sum()) for f in flat) / sum(f.numel() for f in flat))
    if whole == 0:
        return [1.0] * len(flat)
    clamp = lambda r: min(max(r, 1 / RELATIVE_STEP_RANGE), RELATIVE_STEP_RANGE)  # noqa: E731
    return [clamp(float(f.square().mean().sqrt()) / whole) ** power for f in flat]


def scaled_model(scales=(1.0, 0.001, 3.0, 0.2, 1.0, 0.5, 5.0)) -> torch.nn.Module:
    """small_model with its tensors (scale, conv w, conv b, fc1 w, fc1 b, fc2 w, fc2 b) at unequal scales, the conv
    weights past the clamp."""
    model = small_model()
    with torch.no_grad():
        for p, s in zip(model.parameters(), scales):
            p.mul_(s)
    return model


def one_step(model, opt) -> list[torch.Tensor]:
    """The displacement of each tensor after one step from a fresh state, on the first batch."""
    before = [p.detach().clone() for p in model.parameters()]
    loss_of(model, 0).backward()
    opt.step()
    return [p.detach() - b for p, b in zip(model.parameters(), before)]


@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=6), log_scales=st.data(),
       power=st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0]), log_c=st.floats(-6, 6), seed=st.integers(0, 2**16))
def test_the_factors_are_their_definition_on_floats_and_tensors_and_ignore_a_common_factor(sizes, log_scales, power,
                                                                                          log_c, seed):
    scales = log_scales.draw(st.lists(st.floats(-4, 4), min_size=len(sizes), max_size=len(sizes)))
    gen = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(n, generator=gen, dtype=torch.float64) * 10.0**s for n, s in zip(sizes, scales)]
    expected = definition(tensors, power)
    stats = [(float(t.square().mean().sqrt()), t.numel()) for t in tensors]
    on_floats = relative_step_factors(stats, power)
    on_tensors = [float(m) for m in relative_step_factors([(t.square().mean().sqrt(), torch.tensor(t.numel()))
                                                           for t in tensors], power)]
    for got in (on_floats, on_tensors):
        assert got == pytest.approx(expected, rel=1e-9)
    # every weight times one constant leaves the factors as they are
    c = 10.0**log_c
    assert relative_step_factors([(r * c, n) for r, n in stats], power) == pytest.approx(on_floats, rel=1e-9)
    bound = RELATIVE_STEP_RANGE**power
    assert all(1 / bound * (1 - 1e-12) <= m <= bound * (1 + 1e-12) for m in on_floats)
    if power == 0 or len(sizes) == 1:  # off, or a net of one tensor
        assert on_floats == pytest.approx([1.0] * len(sizes), rel=1e-12)
    column = relative_step_column(tensors, power)
    if power == 0:
        assert column is None
    else:  # one entry per coordinate, in order
        assert column.shape == (sum(sizes),)
        torch.testing.assert_close(column.double(), torch.tensor(expected, dtype=torch.float64).repeat_interleave(torch.tensor(sizes)),
                                   rtol=1e-6, atol=0)


@pytest.mark.parametrize("power", [0.5, 1.0])
@pytest.mark.parametrize("implementation,chunk_size", [("fast", None), ("torch", None), ("torch", 7), ("reference", None)])
def test_one_step_is_the_plain_rules_step_times_each_tensors_factor(power, implementation, chunk_size):
    """From a fresh state the state's update does not depend on the step size, so each tensor's first displacement
    is the plain rule's times m_t (the group's lr, as ever, on top)."""
    model = scaled_model()
    factors = definition(model.parameters(), power)
    plain_model = copy.deepcopy(model)
    plain = one_step(plain_model, LearnedOptimizer(plain_model.parameters(), implementation=implementation,
                                                   chunk_size=chunk_size))
    for lr in (1.0, 0.3):
        relative_model = copy.deepcopy(model)
        opt = LearnedOptimizer(relative_model.parameters(), lr=lr, relative_step=power,
                               implementation=implementation, chunk_size=chunk_size)
        moved = one_step(relative_model, opt)
        assert opt.config.relative_step == power
        for d, d0, m in zip(moved, plain, factors):
            # displacements are differences of float32 weights up to about 10: rounding of 1e-6 at most
            torch.testing.assert_close(d, d0 * (lr * m), rtol=1e-4, atol=2e-6)
    assert min(factors) == pytest.approx(RELATIVE_STEP_RANGE**-power)  # the conv bias is past the clamp
    assert max(factors) > 1.5


def test_the_net_is_every_param_group_and_each_group_keeps_its_lr():
    model = scaled_model()
    params = list(model.parameters())
    factors = definition(params, 0.5)
    whole_model = copy.deepcopy(model)
    whole = one_step(whole_model, LearnedOptimizer(whole_model.parameters(), relative_step=0.5))
    split_model = copy.deepcopy(model)
    split_params = list(split_model.parameters())
    opt = LearnedOptimizer([{"params": split_params[:3], "lr": 0.5}, {"params": split_params[3:]}], relative_step=0.5)
    split = one_step(split_model, opt)
    for i, (d, d_whole) in enumerate(zip(split, whole)):
        torch.testing.assert_close(d, d_whole * (0.5 if i < 3 else 1.0), rtol=1e-4, atol=2e-6)
    assert len(set(round(m, 6) for m in factors)) > 3  # not a net of equal tensors


def test_a_tensor_at_zero_still_moves_and_a_net_at_zero_takes_the_plain_steps():
    model = scaled_model()
    with torch.no_grad():
        model.fc1.bias.zero_()
    factors = definition(model.parameters(), 0.5)
    assert factors[4] == pytest.approx(RELATIVE_STEP_RANGE**-0.5)
    moved = one_step(model, LearnedOptimizer(model.parameters(), relative_step=0.5))
    assert (moved[4] != 0).any()

    zero, plain = small_model(), small_model()
    with torch.no_grad():
        for a, b in zip(zero.parameters(), plain.parameters()):
            a.zero_(), b.zero_()
    torch.testing.assert_close(one_step(zero, LearnedOptimizer(zero.parameters(), relative_step=1.0)),
                               one_step(plain, LearnedOptimizer(plain.parameters())), rtol=0, atol=0)


def test_nan_and_inf_weights_are_left_out_of_the_scales():
    """A non-finite weight counts in no RMS (as a non-finite gradient entry in the gradient's): the other tensors'
    factors and steps stay finite."""
    model = scaled_model()
    with torch.no_grad():
        model.fc1.weight.view(-1)[0] = float("inf")
    opt = LearnedOptimizer(model.parameters(), relative_step=0.5)
    for step in range(3):
        opt.zero_grad()
        loss_of(model, step).backward()
        for p in model.parameters():  # the inf weight's gradient is not finite: keep the rest of the net training
            p.grad.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        opt.step()
    finite = [p for p in model.parameters() if p is not model.fc1.weight]
    assert all(torch.isfinite(p).all() for p in finite)
    assert torch.isfinite(model.fc1.weight.view(-1)[1:]).all()


@pytest.mark.parametrize("name", ["relative_step", "grad_relative_step"])
def test_it_travels_in_the_weight_file_the_metatrain_flag_and_the_constructor(tmp_path, name):
    """Both relative steps (of the weights, b; of the gradients, c: tests/test_grad_relative_step.py)."""
    rule = random_weights(NetConfig(grad_norm="tensor", **{name: 0.5}), seed=3)
    save_weights(tmp_path / "r.safetensors", rule.theta, rule.config, card={"name": "r"})
    loaded = load_weights(str(tmp_path / "r.safetensors"))
    assert getattr(loaded.config, name) == 0.5
    assert getattr(LearnedOptimizer([torch.zeros(2, requires_grad=True)], weights=loaded).config, name) == 0.5
    assert getattr(load_weights("default").config, name) == 0  # cards written before it load without it
    override = LearnedOptimizer([torch.zeros(2, requires_grad=True)], **{name: 0.25})
    assert getattr(override.config, name) == 0.25 and getattr(override.rule.config, name) == 0
    parser = build_parser()
    out = ["--task", "two_moons", "--out", str(tmp_path / "x.safetensors")]
    flag = "--" + name.replace("_", "-")
    assert getattr(config_from_args(parser.parse_args(out + [flag, "0.5"])).net, name) == 0.5
    assert getattr(config_from_args(parser.parse_args(out)).net, name) == 0
    for bad in (-0.1, 2.5, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match=f"Invalid {name}"):
            NetConfig(**{name: bad})
    with pytest.raises(ValueError, match=f"Invalid {name}"):
        LearnedOptimizer([torch.zeros(2, requires_grad=True)], **{name: -1.0})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("implementation", ["fast", "torch"])
@pytest.mark.parametrize("option", [dict(relative_step=0.5), dict(grad_relative_step=1.0),
                                    dict(relative_step=0.5, grad_relative_step=0.5)])
def test_on_cuda_the_steps_are_the_cpu_references(implementation, option):
    """The CUDA paths (the Triton RMS of the weights or gradients with "fast", chunked torch ops with "torch") give
    each tensor the CPU's factor."""
    cpu_model, model = scaled_model(), scaled_model().cuda()
    expected = run_steps(cpu_model, LearnedOptimizer(cpu_model.parameters(), **option, implementation="reference"))
    opt = LearnedOptimizer(model.parameters(), **option, implementation=implementation)
    for step in range(12):
        opt.zero_grad()
        x, y = (v.cuda() for v in batch(step))
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    for a, b in zip(expected, model.parameters()):
        torch.testing.assert_close(b.detach().cpu(), a, rtol=1e-4, atol=1e-5)
