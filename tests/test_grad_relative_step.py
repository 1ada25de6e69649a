"""NetConfig.grad_relative_step (c): each tensor's update times clamp(RMS(g_tensor) / RMS(g_net), 1/R, R)^c of the
raw gradients, RMS(g_net) over every tensor the step updates; with relative_step (b) the two factors multiply.
The weight file, flag and constructor: test_relative_step.py."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from conftest import loss_of, small_model
from learned_optim import LearnedOptimizer
from learned_optim.features import RELATIVE_STEP_RANGE
from test_relative_step import definition, scaled_model


def gradients(model, step: int = 0) -> list[torch.Tensor]:
    """The raw gradients of ``model`` on a batch, in float64 (the model is left without .grad)."""
    model = copy.deepcopy(model)
    loss_of(model, step).backward()
    return [p.grad.double() for p in model.parameters()]


def one_step(model, opt) -> list[torch.Tensor]:
    before = [p.detach().clone() for p in model.parameters()]
    loss_of(model, 0).backward()
    opt.step()
    return [p.detach() - b for p, b in zip(model.parameters(), before)]


@pytest.mark.parametrize("power", [0.5, 1.0])
@pytest.mark.parametrize("implementation,chunk_size", [("fast", None), ("torch", None), ("torch", 7), ("reference", None)])
def test_one_step_is_the_plain_rules_step_times_each_tensors_gradient_factor(power, implementation, chunk_size):
    """From a fresh state the state's update does not depend on the step size, so each tensor's first displacement
    is the plain rule's times its gradient's factor (and the group's lr)."""
    model = scaled_model()
    factors = definition(gradients(model), power)
    plain_model = copy.deepcopy(model)
    plain = one_step(plain_model, LearnedOptimizer(plain_model.parameters(), implementation=implementation,
                                                   chunk_size=chunk_size))
    for lr in (1.0, 0.3):
        scaled = copy.deepcopy(model)
        opt = LearnedOptimizer(scaled.parameters(), lr=lr, grad_relative_step=power, implementation=implementation,
                               chunk_size=chunk_size)
        assert opt.config.grad_relative_step == power and opt.rule.config.grad_relative_step == 0
        for d, d0, m in zip(one_step(scaled, opt), plain, factors):
            torch.testing.assert_close(d, d0 * (lr * m), rtol=1e-4, atol=2e-6)
    # the scaled model's gradients are at unequal scales: some factors are far from 1, one at the clamp
    assert max(factors) > 2 and min(factors) < 0.5
    assert any(math.isclose(m, RELATIVE_STEP_RANGE ** (s * power), rel_tol=1e-9) for m in factors for s in (-1, 1))


def test_the_weight_and_gradient_factors_multiply_and_the_net_is_every_param_group():
    model = scaled_model()
    expected = [a * b for a, b in zip(definition(model.parameters(), 0.5), definition(gradients(model), 1.0))]
    plain_model = copy.deepcopy(model)
    plain = one_step(plain_model, LearnedOptimizer(plain_model.parameters()))
    both = copy.deepcopy(model)
    params = list(both.parameters())
    opt = LearnedOptimizer([{"params": params[:3], "lr": 0.5}, {"params": params[3:]}], relative_step=0.5,
                           grad_relative_step=1.0)
    for i, (d, d0, m) in enumerate(zip(one_step(both, opt), plain, expected)):
        torch.testing.assert_close(d, d0 * (m * (0.5 if i < 3 else 1.0)), rtol=1e-4, atol=2e-6)
    assert len(set(round(m, 6) for m in expected)) > 3


def test_the_factor_is_read_at_every_step_from_that_steps_gradients():
    """Three steps of the optimizer equal three steps of the plain rule with each tensor's lr set, before each step,
    to the factor of that step's gradients."""
    model = scaled_model()
    ref_model = copy.deepcopy(model)
    opt = LearnedOptimizer(model.parameters(), grad_relative_step=1.0)
    ref_params = list(ref_model.parameters())
    ref = LearnedOptimizer([{"params": [p]} for p in ref_params])
    seen = []
    for step in range(3):
        for m, o in ((model, opt), (ref_model, ref)):
            o.zero_grad()
            loss_of(m, step).backward()
        factors = definition([p.grad for p in ref_params], 1.0)
        seen.append(factors)
        for group, f in zip(ref.param_groups, factors):
            group["lr"] = f
        opt.step()
        ref.step()
    for a, b in zip(model.parameters(), ref_params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert seen[0] != pytest.approx(seen[2], rel=1e-3)  # the factors moved: a stale factor would fail the check


def test_nonfinite_gradient_entries_are_left_out_of_the_scales():
    """With nonfinite="skip" a NaN or inf gradient entry counts in no RMS: every tensor's factor is the one of its
    finite entries, so the other tensors take the steps of a gradient without it."""
    model = scaled_model()
    plain_model = copy.deepcopy(model)
    loss_of(model, 0).backward()
    loss_of(plain_model, 0).backward()
    model.fc1.weight.grad.view(-1)[0] = float("nan")
    model.fc2.weight.grad.view(-1)[1] = float("inf")
    finite = [g.double().reshape(-1)[torch.isfinite(g.reshape(-1))] for g in (p.grad for p in model.parameters())]
    whole = math.sqrt(sum(float(g.square().sum()) for g in finite) / sum(g.numel() for g in finite))
    factors = [min(max(float(g.square().mean().sqrt()) / whole, 1 / RELATIVE_STEP_RANGE), RELATIVE_STEP_RANGE)
               for g in finite]
    before = [p.detach().clone() for p in model.parameters()]
    # a rule without per-tensor inputs (those would see the net's RMS change with the left-out entries)
    LearnedOptimizer(model.parameters(), weights="l2l-mlp-family", grad_relative_step=1.0).step()
    LearnedOptimizer(plain_model.parameters(), weights="l2l-mlp-family").step()
    for p, p0, b, m, name in zip(model.parameters(), plain_model.parameters(), before, factors,
                                 [n for n, _ in model.named_parameters()]):
        assert torch.isfinite(p).all()
        if name in ("fc1.weight", "fc2.weight"):
            continue  # the skipped entries stay, the rest are the plain rule's (the tensor's RMS omits the entry)
        torch.testing.assert_close(p - b, (p0.detach() - b) * m, rtol=1e-4, atol=2e-6)


def test_one_tensor_takes_the_plain_step():
    """A net of one tensor: its gradient is the net's, the factor 1."""
    p1 = torch.nn.Parameter(torch.randn(50) * 3)
    p2 = torch.nn.Parameter(p1.detach().clone())
    for p, kwargs in ((p1, {}), (p2, dict(grad_relative_step=2.0))):
        opt = LearnedOptimizer([p], **kwargs)
        for _ in range(3):
            opt.zero_grad()
            (p.square().sum() * 0.01).backward()
            opt.step()
    torch.testing.assert_close(p1, p2, rtol=0, atol=0)
