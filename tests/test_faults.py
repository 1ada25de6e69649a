"""Faults in training: non-finite gradients anywhere, gradients that come and go, parameters that move."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import loss_of, small_model
from learned_optim import LearnedOptimizer
from test_optimizer import params_of, state_of

BAD = st.sampled_from([float("nan"), float("inf"), -float("inf")])


@given(
    poison=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3), st.integers(0, 10_000), BAD), max_size=6),
    whole=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3)), max_size=2),
    implementation=st.sampled_from(["fast", "torch", "reference"]),
)
def test_no_nonfinite_value_ever_reaches_parameters_or_state(rule, poison, whole, implementation):
    """Single coordinates or whole tensors, at step 0 or later: values and state stay finite, poisoned ones frozen."""
    model = small_model()
    opt = LearnedOptimizer(model.parameters(), weights=rule, implementation=implementation, chunk_size=64)
    params = list(model.parameters())
    for t in range(6):
        opt.zero_grad()
        loss_of(model, t).backward()
        frozen = []
        for step, index, where, value in poison:
            if step == t:
                flat = params[index].grad.view(-1)
                flat[where % flat.numel()] = value
                frozen.append((index, where % flat.numel()))
        for step, index in whole:
            if step == t:
                params[index].grad.fill_(float("nan"))
                frozen.extend((index, i) for i in range(params[index].numel()))
        before = [p.detach().clone().view(-1) for p in params]
        opt.step()
        for index, i in frozen:
            assert params[index].view(-1)[i] == before[index][i]
        for p in params:
            assert torch.isfinite(p).all()
            assert all(torch.isfinite(v).all() for v in opt.state[p].values() if torch.is_tensor(v))


def test_gradients_that_come_and_go(rule):
    """A parameter without a gradient on a step keeps its value and its state; its step count pauses."""
    model = small_model()
    opt = LearnedOptimizer(model.parameters(), weights=rule)
    for t in range(5):
        opt.zero_grad(set_to_none=True)
        loss_of(model, t).backward()
        if t in (1, 2):
            model.fc1.weight.grad = None
            before_value, before_state = model.fc1.weight.detach().clone(), state_of(opt)
        opt.step()
        if t in (1, 2):
            assert torch.equal(model.fc1.weight, before_value)
            index = [i for i, p in enumerate(model.parameters()) if p is model.fc1.weight][0]
            after = state_of(opt)[index]
            assert all(torch.equal(after[k], before_state[index][k]) for k in ("h0", "c0", "h1", "c1"))
    assert opt.state[model.fc1.weight]["step"] == 3 and opt.state[model.fc2.weight]["step"] == 5


def test_parameter_that_changes_dtype_after_state_exists(rule):
    """model.double() after some steps: the state stays in its dtype and the rule keeps stepping."""
    model = small_model()
    opt = LearnedOptimizer(model.parameters(), weights=rule)
    for t in range(2):
        opt.zero_grad()
        loss_of(model, t).backward()
        opt.step()
    model.double()  # the same Parameter objects, new data
    before = params_of(model)
    opt.zero_grad()
    loss_of(model, 2).backward()
    opt.step()
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert all(s["h0"].dtype == torch.float32 and s["step"] == 3 for s in opt.state.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_parameter_moved_to_cuda_after_state_exists(rule):
    from conftest import batch

    model = small_model()
    opt = LearnedOptimizer(model.parameters(), weights=rule)
    opt.zero_grad()
    loss_of(model, 0).backward()
    opt.step()
    model.cuda()  # the state follows the parameters on the next step
    opt.zero_grad()
    inputs, targets = (v.cuda() for v in batch(1))
    ((model(inputs) - targets) ** 2).mean().backward()
    opt.step()
    assert all(s["h0"].device.type == "cuda" and s["step"] == 2 for s in opt.state.values())
